"""A deploy lock per OpenSearch cluster, so two `dac deploy --plan` runs never write at the same time.

Monitor updates carry `if_seq_no`/`if_primary_term`, so OpenSearch itself refuses an update of a
monitor that moved since dac read it. Creates cannot be guarded that way (the Alerting API picks
monitor ids, so "create if absent" does not exist for a rule), and a plan's check-then-write spans
several requests; the lock makes that sequence atomic against other dac runs.

The lock is one document, `dac-deploy-lock/_doc/deploy`, written with `op_type=create`: of two
concurrent creates exactly one succeeds, the other gets 409. It holds `{holder, acquired_at,
expires_at}`; an expired lock (a crashed run) is deleted with `if_seq_no`/`if_primary_term`, so
two runs taking over the same expired lock cannot both succeed. The index is hidden.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from deployer.targets.base import TargetError

log = logging.getLogger("dac.lock")

INDEX = "dac-deploy-lock"
DOC = f"/{INDEX}/_doc/deploy"
TTL_SECONDS = 15 * 60
POLL_SECONDS = 1.0


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


class OpenSearchDeployLock:
    """Acquire and release the cluster's deploy lock through an `OpenSearchClient`."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._seq: tuple[int, int] | None = None

    @contextlib.contextmanager
    def hold(self, holder: str, *, wait: float) -> Iterator[None]:
        """Hold the lock for the duration of the block, waiting up to `wait` seconds for it."""
        self.acquire(holder, wait=wait)
        try:
            yield
        finally:
            self.release()

    def acquire(self, holder: str, *, wait: float) -> None:
        """Create the lock document; while another run holds it, poll until released or `wait` passes."""
        self.client.request(
            "PUT",
            f"/{INDEX}",
            {"settings": {"index.hidden": True, "index.auto_expand_replicas": "0-1"}},
            ok=(400,),  # already exists
        )
        deadline = time.monotonic() + wait
        while True:
            now = datetime.now(UTC)
            doc = {
                "holder": holder,
                "acquired_at": _iso(now),
                "expires_at": _iso(now + timedelta(seconds=TTL_SECONDS)),
            }
            answer = self.client.request(
                "PUT", f"/{INDEX}/_create/deploy", doc, params={"refresh": "true"}, ok=(409,)
            )
            if isinstance(answer, dict) and answer.get("result") == "created":
                self._seq = (int(answer["_seq_no"]), int(answer["_primary_term"]))
                return
            held = self.client.request("GET", DOC, ok=(404,)) or {}
            if not held.get("found"):
                continue  # released between our create and our read
            meta = held.get("_source") or {}
            if meta == doc:
                # Our own create, retried after its answer was lost.
                self._seq = (int(held["_seq_no"]), int(held["_primary_term"]))
                return
            if _expired(meta.get("expires_at")):
                self.client.request(
                    "DELETE",
                    DOC,
                    params={
                        "if_seq_no": held["_seq_no"],
                        "if_primary_term": held["_primary_term"],
                        "refresh": "true",
                    },
                    ok=(404, 409),
                )
                continue
            if time.monotonic() >= deadline:
                raise TargetError(
                    f"another deploy holds the lock of this cluster ({meta.get('holder', '?')} since "
                    f"{meta.get('acquired_at', '?')}); nothing was written",
                    hint=f"wait for it to finish (--lock-wait), or if it crashed, the lock expires at "
                    f"{meta.get('expires_at', '?')} (document {DOC})",
                )
            time.sleep(POLL_SECONDS * (0.5 + random.random()))

    def release(self) -> None:
        """Delete our lock document (only if it is still ours; failures leave it to expire)."""
        if self._seq is None:
            return
        seq_no, term = self._seq
        try:
            self.client.request(
                "DELETE",
                DOC,
                params={"if_seq_no": seq_no, "if_primary_term": term, "refresh": "true"},
                ok=(404, 409),
            )
        except TargetError as e:
            log.warning("could not release the deploy lock (it expires by itself): %s", e)
        self._seq = None


def _expired(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return when < datetime.now(UTC)
