"""A deploy lock per Kibana space, so two `dac deploy --plan` runs never write at the same time.

Kibana's detection engine API has no conditional write: `_import`, `PUT .../rules` and
`_bulk_action` take no revision or version to compare, and a rule's `rule_id` is checked for
uniqueness by a search before the create, not atomically. So the check "nothing moved since the
plan" and the write that follows are made atomic against other dac runs by a lock, and the lock
is the one object Kibana creates with Elasticsearch's create-if-absent: a value list with a fixed
id (`POST /api/lists` with `id`, stored with the `create` operation; a second create of the same
id answers 409 `list id: "..." already exists`).

What this does not cover: a person editing a rule in the Kibana UI during the few milliseconds
between dac's re-read and its write. Kibana gives no way to refuse that write; the next plan
shows the difference.

The lock holds `meta: {holder, acquired_at, expires_at}`. A lock past `expires_at` (a crashed
run) is removed and taken; the removal is not conditional, so two runs finding the same expired
lock at the same instant could both proceed — the one case the lock does not close. Needs the value-list privileges (`.lists-*`/`.items-*` index write);
see docs/deploy.md.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from deployer.targets.base import TargetError
from deployer.targets.http import HttpClient, HttpError

log = logging.getLogger("dac.lock")

LOCK_ID = "dac-deploy-lock"
LISTS = "/api/lists"
TTL_SECONDS = 15 * 60
POLL_SECONDS = 1.0


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


class KibanaDeployLock:
    """Acquire and release the value-list lock of one space (`prefix` is `""` or `/s/<space>`)."""

    def __init__(
        self,
        http: HttpClient,
        prefix: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = http
        self.prefix = prefix
        self._clock = clock
        self._sleep = sleep

    def acquire(self, holder: str, *, wait: float) -> None:
        """Create the lock; while another run holds it, poll until it is released or `wait` passes."""
        deadline = self._clock() + wait
        index_made = False
        while True:
            now = datetime.now(UTC)
            body = {
                "id": LOCK_ID,
                "name": "dac deploy lock",
                "description": f"dac deploy in progress: {holder} since {_iso(now)}",
                "type": "keyword",
                "meta": {
                    "holder": holder,
                    "acquired_at": _iso(now),
                    "expires_at": _iso(now + timedelta(seconds=TTL_SECONDS)),
                },
            }
            resp = self.http.request("POST", f"{self.prefix}{LISTS}", json=body, ok=(200, 400, 409))
            if resp.status_code == 200:
                return
            if resp.status_code == 400:
                if index_made or not _no_list_index(resp):
                    raise HttpError(f"cannot take the deploy lock: {_message(resp)}", status_code=400)
                # A space whose value-list data streams were never created (Kibana creates them
                # when someone opens the value lists UI or calls this route).
                self.http.request("POST", f"{self.prefix}{LISTS}/index", ok=(200, 409))
                index_made = True
                continue
            held = self._read()
            if held is None:
                continue  # released between our create and our read
            meta = held.get("meta") or {}
            if meta == body["meta"]:
                return  # our own create, retried after its answer was lost
            if _expired(meta.get("expires_at")):
                self.http.request("DELETE", f"{self.prefix}{LISTS}", params={"id": LOCK_ID}, ok=(200, 404))
                continue
            if self._clock() >= deadline:
                raise TargetError(
                    f"another deploy holds the lock of this space ({meta.get('holder', '?')} since "
                    f"{meta.get('acquired_at', '?')}); nothing was written",
                    hint=f"wait for it to finish (--lock-wait), or if it crashed, the lock expires at "
                    f"{meta.get('expires_at', '?')} (value list {LOCK_ID})",
                )
            self._sleep(POLL_SECONDS * (0.5 + random.random()))

    def release(self) -> None:
        """Delete the lock (already gone is fine; a failure leaves it to expire, with a warning)."""
        try:
            self.http.request("DELETE", f"{self.prefix}{LISTS}", params={"id": LOCK_ID}, ok=(200, 404))
        except TargetError as e:
            log.warning("could not release the deploy lock (it expires by itself): %s", e)

    def _read(self) -> dict[str, Any] | None:
        resp = self.http.request("GET", f"{self.prefix}{LISTS}", params={"id": LOCK_ID}, ok=(200, 404))
        return resp.json() if resp.status_code == 200 else None


def _message(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)[:200]


def _no_list_index(resp: Any) -> bool:
    # Kibana: 'To create a list, the data stream must exist first. Data stream "..." does not exist'
    text = _message(resp).lower()
    return "must exist first" in text or "does not exist" in text


def _expired(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return when < datetime.now(UTC)
