"""Kibana detection engine client and the Kibana deploy target.

Talks to the public, versioned (`elastic-api-version: 2023-10-31`) detection engine API:
`_find` (paged, filtered to owned rules) and `_export` (to spot unowned rules that share a
rule_id) to read; one multipart `_import?overwrite=true` per 10,000 rules / 10 MiB for creates and
updates; `_bulk_action` (100 ids per request) for enable/disable/delete.

Supported Kibana versions: 8.11 and later 8.x, and 9.x. 8.11 is the first release whose rule
schema matches the one this tool writes (`investigation_fields` as `{field_names: [...]}`, the
2023-10-31 versioned routes); 10.x is refused until it has been checked.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from deployer.exceptions import kibana as kx
from deployer.exceptions.model import Catalogue
from deployer.targets import kibana_rules as kr
from deployer.targets.base import ProgressCallback, Result, TargetError
from deployer.targets.config import TargetConfig
from deployer.targets.http import AuthError, HttpClient, HttpError, RetryPolicy, auth_from_env
from deployer.targets.plan import CREATE, DELETE, UPDATE, Plan
from deployer.targets.saved_plan import sha256_of

API_VERSION = "2023-10-31"
MIN_VERSION = (8, 11, 0)
MAX_VERSION_EXCLUSIVE = (10, 0, 0)
RULES = "/api/detection_engine/rules"
FIND_PER_PAGE = 100  # Kibana's rules-table page size; keeps each response small
FIND_MAX_WINDOW = 10_000  # page * per_page beyond the ES result window fails
BULK_MAX_IDS = 100  # `_bulk_action` rejects more than 100 ids
IMPORT_MAX_RULES = 10_000  # xpack.securitySolution.maxRuleImportExportSize default
# maxRuleImportPayloadBytes is 10 MiB for the whole multipart body; leave room for its framing.
IMPORT_MAX_BYTES = 10 * 1024 * 1024 - 64 * 1024
EXPORT_MAX_RULES = 10_000
_SPACE_ID = re.compile(r"^[a-z0-9_-]+$")


def parse_version(text: str) -> tuple[int, int, int]:
    """Return (major, minor, patch) from a Kibana version string such as `8.15.0-SNAPSHOT`."""
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        raise ValueError(f"not a version: {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in v)


class KibanaClient:
    """A thin client for the detection engine API of one Kibana space."""

    def __init__(
        self,
        url: str,
        *,
        space: str | None = None,
        auth: Any,
        verify: bool | str = True,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if space and not _SPACE_ID.match(space):
            raise TargetError(f"invalid Kibana space id {space!r}", hint="space ids use a-z, 0-9, _ and -")
        self.space = space or "default"
        self.prefix = "" if self.space == "default" else f"/s/{quote(self.space)}"
        self.http = HttpClient(
            url,
            auth=auth,
            verify=verify,
            timeout=timeout,
            retry=retry,
            service="Kibana",
            sleep=sleep,
            headers={"kbn-xsrf": "dac", "elastic-api-version": API_VERSION},
        )
        self.url = self.http.base_url
        self.version: str | None = None

    def __repr__(self) -> str:
        return f"KibanaClient({self.url!r}, space={self.space!r})"

    def close(self) -> None:
        """Close pooled connections."""
        self.http.close()

    # -- reads ---------------------------------------------------------------------------------

    def check_version(self) -> str:
        """Read `/api/status` and refuse unsupported Kibana versions; returns the version."""
        if self.version:
            return self.version
        body = self.http.request("GET", "/api/status").json()
        number = (body.get("version") or {}).get("number") if isinstance(body, dict) else None
        if not number:
            raise TargetError(
                f"Kibana at {self.url} did not report its version (the status answer is redacted)",
                hint="the credentials need access to /api/status",
            )
        try:
            v = parse_version(number)
        except ValueError:
            raise TargetError(f"Kibana at {self.url} reported an unreadable version {number!r}") from None
        if not (MIN_VERSION <= v < MAX_VERSION_EXCLUSIVE):
            raise TargetError(
                f"Kibana {number} at {self.url} is not supported",
                hint=f"supported: {_fmt(MIN_VERSION)} <= version < {_fmt(MAX_VERSION_EXCLUSIVE)}",
            )
        self.version = number
        return number

    def find(self, kql_filter: str | None = None, *, per_page: int = FIND_PER_PAGE) -> list[dict[str, Any]]:
        """Return every rule matching the KQL filter, reading `_find` page by page."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            params: dict[str, Any] = {"page": page, "per_page": per_page}
            if kql_filter:
                params["filter"] = kql_filter
            # A stable sort keeps pages from overlapping if rules change while paging.
            params.update(sort_field="created_at", sort_order="asc")
            try:
                body = self.http.request("GET", f"{self.prefix}{RULES}/_find", params=params).json()
            except HttpError as e:
                raise self.space_error(e) from None
            data = body.get("data") or []
            out.extend(data)
            total = int(body.get("total") or 0)
            if total > FIND_MAX_WINDOW:
                # `_find` pages through a saved-objects search capped by the ES result window.
                raise TargetError(
                    f"{total} rules match in space {self.space}; paging stops at {FIND_MAX_WINDOW}",
                    hint="split the rules across spaces",
                )
            if not data or page * per_page >= total:
                return out
            page += 1

    def space_error(self, e: HttpError) -> TargetError:
        """Return a clear error when `e` is Kibana's 404 for a space that does not exist, else `e`."""
        # Kibana answers 404 "Saved object [space/<id>] not found" for a space that does not exist.
        if e.status_code == 404 and self.space != "default":
            return TargetError(
                f"Kibana space {self.space!r} does not exist at {self.url}",
                hint="create the space, or plan against an existing one with --space",
            )
        return e

    def export(self, rule_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Return the rules `_export` gives for these rule_ids (all rules when None); missing ones are skipped."""
        if rule_ids is not None and not rule_ids:
            return []
        chunks: Iterable[Sequence[str] | None] = (
            [None] if rule_ids is None else _chunks(list(rule_ids), EXPORT_MAX_RULES)
        )
        out: list[dict[str, Any]] = []
        for chunk in chunks:
            payload = None if chunk is None else {"objects": [{"rule_id": r} for r in chunk]}
            resp = self.http.request(
                "POST",
                f"{self.prefix}{RULES}/_export",
                params={"exclude_export_details": "false", "file_name": "export.ndjson"},
                json=payload,
            )
            out.extend(kr.parse_ndjson(resp.text))
        return out

    # -- writes --------------------------------------------------------------------------------

    def import_rules(
        self,
        bodies: Sequence[Mapping[str, Any]],
        *,
        overwrite: bool = True,
        progress: ProgressCallback | None = None,
    ) -> dict[str, tuple[int | None, str] | None]:
        """Import rules in as few multipart requests as Kibana's limits allow.

        Returns {rule_id: None on success | (status_code, message) on failure}.
        """
        results: dict[str, tuple[int | None, str] | None] = {}
        for chunk in _import_chunks(bodies):
            ids = [str(b["rule_id"]) for b in chunk]
            data = "".join(json.dumps(b, separators=(",", ":"), ensure_ascii=False) + "\n" for b in chunk)
            try:
                resp = self.http.request(
                    "POST",
                    f"{self.prefix}{RULES}/_import",
                    params={"overwrite": "true" if overwrite else "false"},
                    files={"file": ("rules.ndjson", data.encode("utf-8"), "application/ndjson")},
                    timeout=max(self.http.timeout[1], 120.0),  # large imports take a while server-side
                )
            except AuthError:
                raise
            except TargetError as e:
                status = getattr(e, "status_code", None)
                for rid in ids:
                    results[rid] = (status, e.message)
                _tick(progress, len(ids))
                continue
            body = resp.json()
            for rid in ids:
                results[rid] = None
            for err in body.get("errors") or []:
                rid = err.get("rule_id") or err.get("id")
                e = err.get("error") or {}
                if rid is not None:
                    results[str(rid)] = (e.get("status_code"), str(e.get("message", "import failed")))
            _tick(progress, len(ids))
        return results

    def bulk_action(
        self, action: str, ids: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> dict[str, tuple[int | None, str] | None]:
        """Run a `_bulk_action` (enable/disable/delete) over object ids, 100 per request.

        Returns {id: None on success | (status_code, message) on failure}.
        """
        results: dict[str, tuple[int | None, str] | None] = {}
        for chunk in _chunks(list(ids), BULK_MAX_IDS):
            try:
                # Partial failure answers HTTP 500 with the same body shape; read it, don't retry it.
                resp = self.http.request(
                    "POST",
                    f"{self.prefix}{RULES}/_bulk_action",
                    json={"action": action, "ids": list(chunk)},
                    ok=(200, 500),
                )
                body = resp.json()
            except AuthError:
                raise
            except (TargetError, ValueError) as e:
                msg = e.message if isinstance(e, TargetError) else "unreadable answer"
                status = getattr(e, "status_code", None)
                for i in chunk:
                    results[i] = (status, msg)
                _tick(progress, len(chunk))
                continue
            attributes = body.get("attributes") if isinstance(body, dict) else None
            if not isinstance(attributes, dict):
                msg = (
                    str(body.get("message", "bulk action failed"))
                    if isinstance(body, dict)
                    else "bulk action failed"
                )
                for i in chunk:
                    results[i] = (resp.status_code, msg)
                _tick(progress, len(chunk))
                continue
            for i in chunk:
                results[i] = None
            for err in attributes.get("errors") or []:
                status = err.get("status_code")
                msg = str(err.get("message", "failed"))
                for r in err.get("rules") or []:
                    if r.get("id") in results:
                        # A rule already gone is what a delete wants (e.g. a retried request).
                        results[r["id"]] = None if (action == "delete" and status == 404) else (status, msg)
            _tick(progress, len(chunk))
        return results


def _tick(progress: ProgressCallback | None, n: int) -> None:
    if progress is not None:
        progress(n)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _import_chunks(bodies: Sequence[Mapping[str, Any]]) -> Iterator[list[Mapping[str, Any]]]:
    chunk: list[Mapping[str, Any]] = []
    size = 0
    for b in bodies:
        n = len(json.dumps(b, separators=(",", ":"), ensure_ascii=False).encode("utf-8")) + 1
        if chunk and (len(chunk) >= IMPORT_MAX_RULES or size + n > IMPORT_MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(b)
        size += n
    if chunk:
        yield chunk


def client_from_config(cfg: TargetConfig, env: Mapping[str, str] | None = None) -> KibanaClient:
    """Build a KibanaClient from a resolved target config (credentials read from env or file)."""
    env = os.environ if env is None else env
    auth = auth_from_env(
        api_key_env=cfg.api_key_env,
        username_env=cfg.username_env,
        password_env=cfg.password_env,
        api_key_file=cfg.api_key_file,
        env=env,
        service="Kibana",
    )
    verify: bool | str = True
    if cfg.insecure:
        verify = False
    elif cfg.ca_cert:
        if not Path(cfg.ca_cert).is_file():
            raise TargetError(f"CA certificate file not found: {cfg.ca_cert}")
        verify = cfg.ca_cert
    return KibanaClient(
        cfg.url,
        space=cfg.space,
        auth=auth,
        verify=verify,
        timeout=cfg.timeout,
        retry=RetryPolicy(retries=cfg.retries),
    )


class KibanaTarget:
    """The Kibana detection engine as a deploy target (see `deployer.targets.base.Target`)."""

    kind = "kibana"
    # The file path is informational: moving a file must not rewrite the rule in Kibana.
    compare_ignore: Collection[str] = ("meta.source_path",)

    def __init__(self, cfg: TargetConfig, client: KibanaClient) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.client = client
        self._ids: dict[str, str] = {}
        self._desired: dict[str, dict[str, Any]] = {}
        self._observed: dict[str, dict[str, Any]] = {}
        self._raw_exceptions: dict[str, dict[str, Any]] = {}

    def describe(self) -> str:
        """Return a secret-free one-line description."""
        version = f" {self.client.version}" if self.client.version else ""
        return f"{self.name} (kibana{version} {self.client.url}, space {self.client.space})"

    def desired(self, rules: Sequence[Any], exceptions: Catalogue | None = None) -> dict[str, dict[str, Any]]:
        """Return normalised bodies for the given rules (by rule_id) and exception lists and items (by plan key)."""
        catalogue = exceptions or Catalogue()
        self._desired = {}
        for rule in rules:
            body = kr.rule_to_body(rule, self.cfg.root)
            body["exceptions_list"] = [
                kx.reference(ref, catalogue) if isinstance(ref, Mapping) else ref
                for ref in body.get("exceptions_list") or []
            ]
            self._desired[rule.rule_id] = kr.normalise(body)
        self._desired.update(kx.desired_objects(catalogue, self.cfg.root))
        return dict(self._desired)

    def object_kind(self, key: str) -> str:
        """What a plan key names: `rule`, `exception_list` or `exception_item`."""
        return kx.kind_of(key)

    def load_payloads(self, bodies: Mapping[str, Mapping[str, Any]]) -> None:
        """Use a saved plan's bodies as the desired ones (read_current looks up list namespaces there)."""
        self._desired.update({key: dict(body) for key, body in bodies.items()})

    def payload(self, rule_id: str) -> dict[str, Any]:
        """Return the exact body `apply` sends for a rule (after `desired`)."""
        return self._desired[rule_id]

    def observed(self, rule_id: str) -> dict[str, Any] | None:
        """Return the rule's state as last read (id, revision, updated_at, digest), None when absent."""
        return self._observed.get(rule_id)

    def read_current(self, rule_ids: Collection[str] = ()) -> dict[str, dict[str, Any]]:
        """Return owned rules, lists and items, plus any with one of `rule_ids` (plan keys), normalised."""
        self.client.check_version()
        wanted_lists = {
            key[len(kx.LIST_KEY) :]: str((self._desired.get(key) or {}).get("namespace_type") or "single")
            for key in rule_ids
            if kx.kind_of(key) == "exception_list"
        }
        rule_ids = [key for key in rule_ids if kx.kind_of(key) == "rule"]
        raw = {r["rule_id"]: r for r in self.client.find(f'alert.attributes.tags:"{kr.OWNER_TAG}"')}
        missing = [rid for rid in rule_ids if rid not in raw]
        for r in self.client.export(missing) if missing else []:
            raw.setdefault(r["rule_id"], r)
        self._ids = {rid: r["id"] for rid, r in raw.items() if r.get("id")}
        current = {rid: kr.normalise(r) for rid, r in raw.items()}
        # What a saved plan records and `deploy --plan` compares: the server's own change markers
        # (revision moves on content edits, updated_at also on enable/disable) plus a digest.
        self._observed = {
            rid: {
                "id": r.get("id"),
                "revision": r.get("revision"),
                "updated_at": r.get("updated_at"),
                "digest": sha256_of(current[rid]),
            }
            for rid, r in raw.items()
        }
        lists, items = kx.read_objects(self.exceptions_api, wanted_lists)
        self._raw_exceptions = {**lists, **items}
        for key, obj in lists.items():
            current[key] = kx.normalise_list(obj)
        for key, obj in items.items():
            current[key] = kx.normalise_item(obj)
        for key, obj in self._raw_exceptions.items():
            # Lists and items carry Elasticsearch's `_version`, which moves on every write.
            self._observed[key] = {
                "id": obj.get("id"),
                "_version": obj.get("_version"),
                "digest": sha256_of(current[key]),
            }
        return current

    def owned(self, body: Mapping[str, Any]) -> bool:
        """Return True when the body carries the dac ownership marker."""
        return kr.owned(body)

    @contextmanager
    def lock(self, holder: str, *, wait: float) -> Iterator[None]:
        """Hold this space's deploy lock (a value list created atomically; see kibana_lock)."""
        from deployer.targets.kibana_lock import KibanaDeployLock

        self.client.check_version()
        lock = KibanaDeployLock(self.client.http, self.client.prefix)
        try:
            lock.acquire(holder, wait=wait)
        except HttpError as e:
            raise self.client.space_error(e) from None
        try:
            yield
        finally:
            lock.release()

    @property
    def exceptions_api(self) -> kx.ExceptionsApi:
        """The exception-list routes of this space."""
        return kx.ExceptionsApi(self.client.http, self.client.prefix)

    def apply(self, plan: Plan, progress: ProgressCallback | None = None) -> list[Result]:
        """Apply the plan: lists and items first (exceptions API), rules, then deletes in reverse order."""
        writes = [c for c in plan.changes if c.action in (CREATE, UPDATE, DELETE)]
        results = self._apply_exceptions(writes, (CREATE, UPDATE), progress)
        failed_lists = {r.rule_id for r in results if not r.ok and kx.kind_of(r.rule_id) == "exception_list"}
        rule_plan = Plan(changes=[c for c in plan.changes if kx.kind_of(c.rule_id) == "rule"])
        results.extend(self._apply_rules(rule_plan, failed_lists, progress))
        results.extend(self._apply_exceptions(writes, (DELETE,), progress))
        return results

    def _apply_exceptions(
        self, writes: Sequence[Any], actions: Sequence[str], progress: ProgressCallback | None
    ) -> list[Result]:
        """Write the lists (then items) of the given actions; deletes go items first, lists last."""
        api = self.exceptions_api
        results: list[Result] = []
        kinds = (
            ("exception_list", "exception_item")
            if DELETE not in actions
            else ("exception_item", "exception_list")
        )
        failed_lists: set[str] = set()
        # Deleting a list deletes its items: those need no request of their own.
        doomed = {
            (self._raw_exceptions.get(c.rule_id) or {}).get("list_id")
            for c in kx.iter_writes(writes, "exception_list", (DELETE,))
        }
        for kind in kinds:
            for c in kx.iter_writes(writes, kind, actions):
                body = dict(c.desired or {})
                current = self._raw_exceptions.get(c.rule_id) or {}
                if kind == "exception_item" and c.action == DELETE and current.get("list_id") in doomed:
                    results.append(Result(c.rule_id, c.action, True, "deleted with its list"))
                    _tick(progress, 1)
                    continue
                if kind == "exception_item" and body.get("list_id") in failed_lists:
                    results.append(
                        Result(c.rule_id, c.action, False, f"its list {body['list_id']!r} was not written")
                    )
                    continue
                try:
                    self._write_exception(api, kind, c.action, body, current, c.rule_id)
                    results.append(Result(c.rule_id, c.action, True))
                except AuthError:
                    raise
                except HttpError as e:
                    status, message = kx.error_of(e)
                    results.append(Result(c.rule_id, c.action, False, message, status))
                    if kind == "exception_list":
                        failed_lists.add(c.rule_id[len(kx.LIST_KEY) :])
                _tick(progress, 1)
        return results

    def _write_exception(
        self,
        api: kx.ExceptionsApi,
        kind: str,
        action: str,
        body: dict[str, Any],
        current: Mapping[str, Any],
        key: str,
    ) -> None:
        route = kx.LISTS if kind == "exception_list" else kx.ITEMS
        if action == DELETE:
            ident = (
                {"list_id": current.get("list_id")}
                if kind == "exception_list"
                else {"item_id": current.get("item_id")}
            )
            api.write(
                "DELETE", route, params={**ident, "namespace_type": current.get("namespace_type") or "single"}
            )
        elif action == CREATE:
            api.write("POST", route, json=body)
        else:
            if kind == "exception_item":
                # A comment keeps its id to stay; one without an id is added (comments cannot be edited).
                ids = {
                    c.get("comment"): c.get("id")
                    for c in current.get("comments") or []
                    if isinstance(c, Mapping)
                }
                body["comments"] = [
                    {**c, "id": ids[c["comment"]]} if ids.get(c["comment"]) else c
                    for c in body.get("comments") or []
                ]
            if current.get("_version"):
                body["_version"] = current["_version"]
            api.write("PUT", route, json=body)

    def _apply_rules(
        self, plan: Plan, failed_lists: set[str], progress: ProgressCallback | None
    ) -> list[Result]:
        """One `_import` for creates/updates, `_bulk_action` for toggles and deletes."""
        results: list[Result] = []
        imports = [
            c
            for c in plan.changes
            if c.action == CREATE or (c.action == UPDATE and c.changed_paths() - {"enabled"})
        ]
        toggles = [c for c in plan.changes if c.action == UPDATE and c.changed_paths() == {"enabled"}]
        deletes = plan.of(DELETE)
        blocked = [
            c
            for c in imports
            if any(f"{kx.LIST_KEY}{r.get('list_id')}" in failed_lists for r in _refs(c.desired))
        ]
        for c in blocked:
            results.append(
                Result(c.rule_id, c.action, False, "an exception list it references was not written")
            )
        imports = [c for c in imports if c not in blocked]
        if imports:
            outcome = self.client.import_rules(
                [c.desired for c in imports if c.desired is not None], overwrite=True, progress=progress
            )
            for c in imports:
                err = outcome.get(c.rule_id)
                results.append(_result(c.rule_id, c.action, err))
        for action, changes in (
            ("enable", [c for c in toggles if (c.desired or {}).get("enabled")]),
            ("disable", [c for c in toggles if not (c.desired or {}).get("enabled")]),
            ("delete", deletes),
        ):
            if not changes:
                continue
            by_id = {self._ids[c.rule_id]: c for c in changes if c.rule_id in self._ids}
            for c in changes:
                if c.rule_id not in self._ids:
                    results.append(
                        Result(c.rule_id, action, False, "the rule's Kibana id is unknown; run plan again")
                    )
            outcome = self.client.bulk_action(action, list(by_id), progress=progress)
            for oid, c in by_id.items():
                results.append(_result(c.rule_id, action, outcome.get(oid)))
        return results

    def close(self) -> None:
        """Release connections."""
        self.client.close()


def _refs(body: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return [r for r in (body or {}).get("exceptions_list") or [] if isinstance(r, Mapping)]


def _result(rule_id: str, action: str, err: tuple[int | None, str] | None) -> Result:
    if err is None:
        return Result(rule_id, action, True)
    return Result(rule_id, action, False, err[1], err[0])


def from_config(cfg: TargetConfig, env: Mapping[str, str] | None = None) -> KibanaTarget:
    """Return the Kibana target for a resolved config."""
    return KibanaTarget(cfg, client_from_config(cfg, env))


def export_documents(
    client: KibanaClient, *, owned_only: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read rules (owned ones by default) and the exception lists they reference, with their items,
    and return them as (rule-file documents, exception-list-file documents)."""
    client.check_version()
    rules = client.find(f'alert.attributes.tags:"{kr.OWNER_TAG}"' if owned_only else None)
    if owned_only:
        rules = [r for r in rules if kr.owned(r)]
    objects = kx.read_lists_for(kx.ExceptionsApi(client.http, client.prefix), rules)
    return [kr.to_rule_document(r) for r in rules], kx.list_documents(objects)
