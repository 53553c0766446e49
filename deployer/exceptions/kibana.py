"""Exception lists and items as Kibana objects: bodies, normal form, ownership, and their API calls.

They plan through the same planner as rules: every list is keyed ``exception-list:<list_id>`` and
every item ``exception-item:<item_id>`` beside the rule_ids, so a plan (and a saved plan) holds
rules, lists and items alike.

Writes go through the exceptions API (``/api/exception_lists`` and ``/items``), not through one
rules ``_import`` with ``overwrite_exceptions=true``: the API writes only the lists and items
that changed (an ``_import`` rewrites every list of every rule it carries, with all its items,
whenever any rule changes), each write has its own status (409 on a duplicate, 404 on a missing
list, 400 over the 10,000-items limit) and ownership is checked per object before anything is
written. Lists are written before the rules that reference them and deleted after them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

from deployer.exceptions.filter import parse_time
from deployer.exceptions.model import DEFAULT_NAMESPACE, Catalogue, ExceptionList
from deployer.targets.http import HttpClient, HttpError
from deployer.targets.kibana_rules import MANAGED_BY, OWNER_TAG, owned, rel_source_path

LISTS = "/api/exception_lists"
ITEMS = "/api/exception_lists/items"
LIST_KEY = "exception-list:"
ITEM_KEY = "exception-item:"
PER_PAGE = 100
# Fields Kibana manages on stored lists and items.
_SERVER = frozenset(
    {
        "id",
        "_version",
        "version",
        "immutable",
        "tie_breaker_id",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
    }
)

__all__ = ["owned"]


def list_key(list_id: str) -> str:
    """The plan key of an exception list."""
    return LIST_KEY + list_id


def item_key(item_id: str) -> str:
    """The plan key of an exception item."""
    return ITEM_KEY + item_id


def kind_of(key: str) -> str:
    """``rule``, ``exception_list`` or ``exception_item`` for a plan key."""
    if key.startswith(LIST_KEY):
        return "exception_list"
    if key.startswith(ITEM_KEY):
        return "exception_item"
    return "rule"


def _mark(body: dict[str, Any], source_path: str | None) -> None:
    tags = [t for t in body.get("tags") or [] if t != OWNER_TAG]
    body["tags"] = [*tags, OWNER_TAG]
    meta = dict(body.get("meta") or {})
    meta["managed_by"] = MANAGED_BY
    if source_path:
        meta["source_path"] = source_path
    body["meta"] = meta


def list_body(lst: ExceptionList, root: Path) -> dict[str, Any]:
    """The create body of a list, in normal form, with the ownership marker."""
    data = lst.data
    body: dict[str, Any] = {
        "list_id": lst.list_id,
        "name": data.get("name"),
        "description": data.get("description") or "",
        "type": lst.type,
        "namespace_type": lst.namespace_type,
        "os_types": list(data.get("os_types") or []),
        "tags": list(data.get("tags") or []),
    }
    if data.get("meta"):
        body["meta"] = copy.deepcopy(data["meta"])
    _mark(body, rel_source_path(lst.path, root))
    return normalise_list(body)


def item_body(lst: ExceptionList, item: Mapping[str, Any]) -> dict[str, Any]:
    """The create body of an item of a list, in normal form, with the ownership marker."""
    body: dict[str, Any] = {
        "item_id": item.get("item_id"),
        "list_id": lst.list_id,
        "type": "simple",
        "namespace_type": lst.namespace_type,
        "name": item.get("name"),
        "description": item.get("description") or "",
        "entries": copy.deepcopy(item.get("entries") or []),
        "os_types": list(item.get("os_types") or []),
        "tags": list(item.get("tags") or []),
        "comments": [{"comment": c["comment"]} for c in item.get("comments") or [] if isinstance(c, Mapping)],
    }
    if item.get("expire_time"):
        body["expire_time"] = item["expire_time"]
    if item.get("meta"):
        body["meta"] = copy.deepcopy(item["meta"])
    _mark(body, None)
    return normalise_item(body)


def normalise_list(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The comparable form of a list body (request or response)."""
    out = {k: copy.deepcopy(v) for k, v in raw.items() if k not in _SERVER and v is not None}
    out.setdefault("namespace_type", DEFAULT_NAMESPACE)
    out.setdefault("os_types", [])
    out.setdefault("tags", [])
    if not out.get("meta"):
        out.pop("meta", None)
    return out


def normalise_item(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The comparable form of an item body: comments by text only, expire_time as UTC."""
    out = {k: copy.deepcopy(v) for k, v in raw.items() if k not in _SERVER and v is not None}
    out.setdefault("namespace_type", DEFAULT_NAMESPACE)
    out.setdefault("os_types", [])
    out.setdefault("tags", [])
    out["comments"] = [
        {"comment": c.get("comment")} for c in out.get("comments") or [] if isinstance(c, Mapping)
    ]
    expires = parse_time(out.get("expire_time"))
    if expires is not None:
        out["expire_time"] = expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if not out.get("meta"):
        out.pop("meta", None)
    return out


def desired_objects(catalogue: Catalogue, root: Path) -> dict[str, dict[str, Any]]:
    """Every list and item of the catalogue as plan bodies, keyed by plan key."""
    out: dict[str, dict[str, Any]] = {}
    for lst in catalogue.lists.values():
        out[list_key(str(lst.list_id))] = list_body(lst, root)
        for item in lst.items:
            if isinstance(item.get("item_id"), str):
                out[item_key(item["item_id"])] = item_body(lst, item)
    return out


def reference(entry: Mapping[str, Any], catalogue: Catalogue) -> dict[str, Any]:
    """A rule's ``exceptions_list`` entry with the four keys Kibana requires.

    ``id`` is the list_id: Kibana's rules ``_import`` looks each reference up by list_id (with
    its type and namespace) and rewrites ``id`` to the stored list's id.
    """
    list_id = str(entry.get("list_id"))
    lst = catalogue.lists.get(list_id)
    return {
        "id": list_id,
        "list_id": list_id,
        "type": entry.get("type") or (lst.type if lst else "detection"),
        "namespace_type": entry.get("namespace_type") or (lst.namespace_type if lst else DEFAULT_NAMESPACE),
    }


def normalise_references(refs: Sequence[Any]) -> list[Any]:
    """Rule-side normal form of ``exceptions_list``: ``id`` stands for the list_id on both sides."""
    out = []
    for ref in refs:
        if isinstance(ref, Mapping) and ref.get("list_id"):
            out.append({**ref, "id": ref["list_id"]})
        else:
            out.append(ref)
    return out


# ---------------------------------------------------------------- API


class ExceptionsApi:
    """The exception-list routes of one Kibana space."""

    def __init__(self, http: HttpClient, prefix: str) -> None:
        self.http = http
        self.prefix = prefix

    def find_lists(self, kql: str | None = None) -> list[dict[str, Any]]:
        """Every list (single and agnostic namespaces) matching the KQL filter on saved-object attributes."""
        out: list[dict[str, Any]] = []
        for namespace in ("single", "agnostic"):
            page = 1
            while True:
                params: dict[str, Any] = {
                    "namespace_type": namespace,
                    "page": page,
                    "per_page": PER_PAGE,
                    "sort_field": "created_at",
                    "sort_order": "asc",
                }
                if kql:
                    saved_object = "exception-list" if namespace == "single" else "exception-list-agnostic"
                    params["filter"] = kql.replace("$so", saved_object)
                body = self.http.request("GET", f"{self.prefix}{LISTS}/_find", params=params).json()
                data = body.get("data") or []
                out.extend(data)
                if not data or page * PER_PAGE >= int(body.get("total") or 0):
                    break
                page += 1
        return out

    def get_list(self, list_id: str, namespace: str) -> dict[str, Any] | None:
        """The list with this list_id, or None (404)."""
        resp = self.http.request(
            "GET",
            f"{self.prefix}{LISTS}",
            params={"list_id": list_id, "namespace_type": namespace},
            ok=(200, 404),
        )
        return resp.json() if resp.status_code == 200 else None

    def find_items(self, list_id: str, namespace: str) -> list[dict[str, Any]]:
        """Every item of a list, page by page."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            resp = self.http.request(
                "GET",
                f"{self.prefix}{ITEMS}/_find",
                params={
                    "list_id": list_id,
                    "namespace_type": namespace,
                    "page": page,
                    "per_page": PER_PAGE,
                    "sort_field": "created_at",
                    "sort_order": "asc",
                },
                ok=(200, 404),
            )
            if resp.status_code == 404:
                return out
            body = resp.json()
            data = body.get("data") or []
            out.extend(data)
            if not data or page * PER_PAGE >= int(body.get("total") or 0):
                return out
            page += 1

    def write(self, method: str, route: str, *, json: Any = None, params: Any = None) -> dict[str, Any]:
        """One create/update/delete; raises HttpError with Kibana's message on failure."""
        return self.http.request(method, f"{self.prefix}{route}", json=json, params=params).json()


def read_objects(
    api: ExceptionsApi, wanted_lists: Mapping[str, str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Owned lists plus the wanted ones (list_id → namespace), and their items, raw, by plan key."""
    raw: dict[str, dict[str, Any]] = {}
    for lst in api.find_lists(f'$so.attributes.tags:"{OWNER_TAG}"'):
        raw[list_key(lst["list_id"])] = lst
    for list_id, namespace in wanted_lists.items():
        if list_key(list_id) not in raw:
            found = api.get_list(list_id, namespace)
            if found is not None:
                raw[list_key(list_id)] = found
    items: dict[str, dict[str, Any]] = {}
    for lst in list(raw.values()):
        for item in api.find_items(lst["list_id"], lst.get("namespace_type") or DEFAULT_NAMESPACE):
            items[item_key(item["item_id"])] = item
    return raw, items


def iter_writes(changes: Sequence[Any], kind: str, actions: Sequence[str]) -> Iterator[Any]:
    """The changes of one object kind and the given actions, in plan order."""
    for change in changes:
        if kind_of(change.rule_id) == kind and change.action in actions:
            yield change


def error_of(exc: HttpError) -> tuple[int | None, str]:
    """(status, Kibana's message) of a failed write."""
    body = exc.body if isinstance(exc.body, Mapping) else {}
    return exc.status_code, str(body.get("message") or exc.message)


# ---------------------------------------------------------------- export / import


def is_list_object(obj: Any) -> bool:
    """An exception list line of an export (a container: list_id, no item_id, no entries)."""
    return isinstance(obj, Mapping) and "list_id" in obj and "item_id" not in obj and "entries" not in obj


def is_item_object(obj: Any) -> bool:
    """An exception item line of an export."""
    return isinstance(obj, Mapping) and "item_id" in obj and "entries" in obj and "list_id" in obj


def _unmark(body: dict[str, Any]) -> None:
    body["tags"] = [t for t in body.get("tags") or [] if t != OWNER_TAG]
    meta = {k: v for k, v in (body.get("meta") or {}).items() if k not in ("managed_by", "source_path")}
    if meta:
        body["meta"] = meta
    else:
        body.pop("meta", None)
    for key in ("tags", "os_types"):
        if not body.get(key):
            body.pop(key, None)


def to_list_document(lst: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The exception list file mapping for a Kibana list and its items (what a person would write)."""
    body = normalise_list(lst)
    _unmark(body)
    doc: dict[str, Any] = {
        k: body[k] for k in ("list_id", "name", "description", "type", "namespace_type") if k in body
    }
    doc.update({k: v for k, v in body.items() if k not in doc})
    doc["items"] = []
    for raw in sorted(items, key=lambda i: (str(i.get("created_at", "")), str(i.get("item_id")))):
        item = normalise_item(raw)
        _unmark(item)
        for key in ("list_id", "namespace_type", "type"):
            item.pop(key, None)
        if not item.get("comments"):
            item.pop("comments", None)
        ordered = {k: item[k] for k in ("item_id", "name", "description") if k in item}
        ordered.update({k: v for k, v in item.items() if k not in ordered})
        doc["items"].append(ordered)
    return doc


def list_documents(objects: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Exception list file mappings for the list and item lines of an export, in list order."""
    lists = [o for o in objects if is_list_object(o)]
    items = [o for o in objects if is_item_object(o)]
    return [
        to_list_document(
            lst,
            [
                i
                for i in items
                if i["list_id"] == lst["list_id"]
                and (i.get("namespace_type") or DEFAULT_NAMESPACE)
                == (lst.get("namespace_type") or DEFAULT_NAMESPACE)
            ],
        )
        for lst in lists
    ]


def rule_file_references(refs: Sequence[Any]) -> list[Any]:
    """A rule's exceptions_list as written in a rule file: the stored list's id is left out."""
    return [
        {k: v for k, v in r.items() if k != "id"} if isinstance(r, Mapping) and r.get("list_id") else r
        for r in refs
    ]


def read_lists_for(api: ExceptionsApi, rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The lists the rules reference and all their items, as export lines (endpoint_list left out, like Kibana)."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for rule in rules:
        for ref in rule.get("exceptions_list") or []:
            if not isinstance(ref, Mapping) or ref.get("list_id") in (None, "endpoint_list"):
                continue
            key = (str(ref.get("namespace_type") or DEFAULT_NAMESPACE), str(ref["list_id"]))
            if key in seen:
                continue
            seen.add(key)
            lst = api.get_list(key[1], key[0])
            if lst is not None:
                out.append(lst)
                out.extend(api.find_items(key[1], key[0]))
    return out
