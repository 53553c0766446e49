"""Exception lists and items for the Kibana contract server, held to Kibana's published spec.

Every request is validated against ../shared/apis/kibana-exceptions-oas.yaml (query and body), every
stored object against the spec's ExceptionList / ExceptionListItem schema, and the answers use
Kibana's status codes and messages: 409 on a duplicate list_id or item_id, 404 on a missing list
or item, 400 past 10,000 items in one list (the item is refused), deletes of a list take its items.
"""

from __future__ import annotations

import copy
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

LISTS = "/api/exception_lists"
ITEMS = "/api/exception_lists/items"
MAX_ITEMS = 10_000


@dataclass
class ExceptionsState:
    """Lists and items per space and namespace: `lists[(space, ns)][list_id]`, `items[(space, ns)][item_id]`."""

    lists: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    items: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    counter: int = 0

    def next_version(self) -> str:
        """A fresh opaque `_version` (Elasticsearch's seq_no/primary_term pair, base64 in Kibana)."""
        self.counter += 1
        return f"WzEsJ{self.counter}XQ=="


class Reply(Exception):
    """An answer to send: (status, body)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body


def _error(status: int, message: str) -> Reply:
    return Reply(status, {"message": message, "status_code": status})


class ExceptionRoutes:
    """The routes, bound to the server's state and the exceptions spec (a KibanaSpec)."""

    def __init__(self, spec: Any, state: ExceptionsState, violations: list[str], now: Any) -> None:
        self.spec = spec
        self.state = state
        self.violations = violations
        self.now = now

    def handles(self, path: str) -> bool:
        """Whether the path is an exception-list route."""
        return path == LISTS or path.startswith(LISTS + "/")

    # -- helpers -------------------------------------------------------------------------------

    def _validate(self, path: str, method: str, query: dict[str, list[str]], body: Any | None) -> None:
        errors = self.spec.query_errors(path, method, query)
        if errors:
            raise _error(400, "[request query]: " + ", ".join(errors))
        if body is not None:
            problems = self.spec.errors(self.spec.body_pointer(path, method), body)
            if problems:
                raise _error(400, "[request body]: " + ", ".join(problems[:5]))

    def _check(self, component: str, obj: dict[str, Any]) -> None:
        problems = self.spec.errors(self.spec.component(component), obj)
        if problems:
            self.violations.append(f"{component}: {problems[:3]}")

    def _ns(self, value: Any) -> str:
        return value if value in ("single", "agnostic") else "single"

    def lists(self, space: str, ns: str) -> dict[str, dict[str, Any]]:
        """The stored lists of a space and namespace."""
        return self.state.lists.setdefault((space, ns), {})

    def items(self, space: str, ns: str) -> dict[str, dict[str, Any]]:
        """The stored items of a space and namespace."""
        return self.state.items.setdefault((space, ns), {})

    def _find_list(self, space: str, query: dict[str, list[str]]) -> dict[str, Any]:
        ns = self._ns(query.get("namespace_type", ["single"])[-1])
        lists = self.lists(space, ns)
        if "id" in query:
            found = next((v for v in lists.values() if v["id"] == query["id"][-1]), None)
            ident = f'id: "{query["id"][-1]}"'
        elif "list_id" in query:
            found = lists.get(query["list_id"][-1])
            ident = f'list_id: "{query["list_id"][-1]}"'
        else:
            raise _error(400, "either id or list_id need to be defined")
        if found is None:
            raise _error(404, f"exception list {ident} does not exist")
        return found

    def _find_item(self, space: str, query: dict[str, list[str]]) -> dict[str, Any]:
        ns = self._ns(query.get("namespace_type", ["single"])[-1])
        items = self.items(space, ns)
        if "id" in query:
            found = next((v for v in items.values() if v["id"] == query["id"][-1]), None)
            ident = f'id: "{query["id"][-1]}"'
        elif "item_id" in query:
            found = items.get(query["item_id"][-1])
            ident = f'item_id: "{query["item_id"][-1]}"'
        else:
            raise _error(400, "either id or item_id need to be defined")
        if found is None:
            raise _error(404, f"exception list item {ident} does not exist")
        return found

    # -- dispatch ------------------------------------------------------------------------------

    def route(
        self, method: str, path: str, space: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        """Answer one request; raises Reply for errors."""
        m = method.lower()
        if path == LISTS:
            self._validate(path, m, query, body if m in ("post", "put") else None)
            return 200, getattr(self, f"list_{m}")(space, query, body)
        if path == f"{LISTS}/_find" and m == "get":
            self._validate(path, m, query, None)
            return 200, self.find_lists(space, query)
        if path == ITEMS:
            self._validate(path, m, query, body if m in ("post", "put") else None)
            return 200, getattr(self, f"item_{m}")(space, query, body)
        if path == f"{ITEMS}/_find" and m == "get":
            self._validate(path, m, query, None)
            return 200, self.find_items(space, query)
        raise _error(404, "Not Found")

    # -- lists ---------------------------------------------------------------------------------

    def list_post(self, space: str, query: dict[str, list[str]], body: dict[str, Any]) -> dict[str, Any]:
        """Create a list; 409 when its list_id exists in the namespace."""
        ns = self._ns(body.get("namespace_type"))
        list_id = body.get("list_id") or str(uuid.uuid4())
        lists = self.lists(space, ns)
        if list_id in lists:
            raise _error(409, f'exception list id: "{list_id}" already exists')
        now = self.now()
        stored = {
            "_version": self.state.next_version(),
            "id": str(uuid.uuid4()),
            "list_id": list_id,
            "name": body["name"],
            "description": body["description"],
            "type": body["type"],
            "namespace_type": ns,
            "os_types": body.get("os_types") or [],
            "tags": body.get("tags") or [],
            "immutable": False,
            "version": body.get("version", 1),
            "tie_breaker_id": str(uuid.uuid4()),
            "created_at": now,
            "created_by": "elastic",
            "updated_at": now,
            "updated_by": "elastic",
            **({"meta": body["meta"]} if "meta" in body else {}),
        }
        self._check("ExceptionList", stored)
        lists[list_id] = stored
        return copy.deepcopy(stored)

    def list_get(self, space: str, query: dict[str, list[str]], body: Any) -> dict[str, Any]:
        """Read a list by id or list_id."""
        return copy.deepcopy(self._find_list(space, query))

    def list_put(self, space: str, query: dict[str, list[str]], body: dict[str, Any]) -> dict[str, Any]:
        """Update a list (409 on a stale `_version`)."""
        ident = {k: [body[k]] for k in ("id", "list_id") if body.get(k)}
        stored = self._find_list(space, {**ident, "namespace_type": [self._ns(body.get("namespace_type"))]})
        if body.get("_version") and body["_version"] != stored["_version"]:
            raise _error(409, "Conflict: the list was updated since it was read")
        for key in ("name", "description", "type", "os_types", "tags", "meta"):
            if key in body:
                stored[key] = copy.deepcopy(body[key])
        stored.update(
            _version=self.state.next_version(), updated_at=self.now(), version=stored["version"] + 1
        )
        self._check("ExceptionList", stored)
        return copy.deepcopy(stored)

    def list_delete(self, space: str, query: dict[str, list[str]], body: Any) -> dict[str, Any]:
        """Delete a list and all its items (rule references are left dangling)."""
        stored = self._find_list(space, query)
        ns = stored["namespace_type"]
        del self.lists(space, ns)[stored["list_id"]]
        items = self.items(space, ns)
        for item_id in [k for k, v in items.items() if v["list_id"] == stored["list_id"]]:
            del items[item_id]
        return stored

    def find_lists(self, space: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """`_find` with the KQL subset `exception-list[-agnostic].attributes.<field>:"value"`."""
        namespaces = [n for raw in query.get("namespace_type", ["single"]) for n in raw.split(",")]
        found: list[dict[str, Any]] = []
        for ns in namespaces:
            found.extend(self.lists(space, self._ns(ns)).values())
        kql = query.get("filter", [""])[-1]
        if kql:
            m = re.fullmatch(r'exception-list(?:-agnostic)?\.attributes\.(\w+):"([^"]*)"', kql.strip())
            if m is None:
                raise _error(400, f"unsupported filter in the contract server: {kql}")
            key, value = m.groups()
            found = [
                x
                for x in found
                if (value in x.get(key, []) if isinstance(x.get(key), list) else x.get(key) == value)
            ]
        return _page(found, query)

    # -- items ---------------------------------------------------------------------------------

    def item_post(self, space: str, query: dict[str, list[str]], body: dict[str, Any]) -> dict[str, Any]:
        """Create an item: 404 without its list, 409 on a duplicate item_id, 400 past 10,000 items."""
        ns = self._ns(body.get("namespace_type"))
        if body["list_id"] not in self.lists(space, ns):
            raise _error(404, f'exception list id: "{body["list_id"]}" does not exist')
        items = self.items(space, ns)
        item_id = body.get("item_id") or str(uuid.uuid4())
        if item_id in items:
            raise _error(409, f'exception list item id: "{item_id}" already exists')
        if sum(1 for v in items.values() if v["list_id"] == body["list_id"]) >= MAX_ITEMS:
            # Kibana creates the item, counts, then deletes it again and answers 400.
            raise _error(
                400, f"Failed to add exception item, exception list would exceed max size of {MAX_ITEMS}"
            )
        now = self.now()
        stored = {
            "_version": self.state.next_version(),
            "id": str(uuid.uuid4()),
            "item_id": item_id,
            "list_id": body["list_id"],
            "type": body["type"],
            "name": body["name"],
            "description": body["description"],
            "entries": copy.deepcopy(body["entries"]),
            "namespace_type": ns,
            "os_types": body.get("os_types") or [],
            "tags": body.get("tags") or [],
            "comments": [self._comment(c) for c in body.get("comments") or []],
            "tie_breaker_id": str(uuid.uuid4()),
            "created_at": now,
            "created_by": "elastic",
            "updated_at": now,
            "updated_by": "elastic",
            **{k: copy.deepcopy(body[k]) for k in ("expire_time", "meta") if k in body},
        }
        self._check("ExceptionListItem", stored)
        items[item_id] = stored
        return copy.deepcopy(stored)

    def _comment(self, c: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "comment": c["comment"],
            "created_at": self.now(),
            "created_by": "elastic",
        }

    def item_get(self, space: str, query: dict[str, list[str]], body: Any) -> dict[str, Any]:
        """Read an item by id or item_id."""
        return copy.deepcopy(self._find_item(space, query))

    def item_put(self, space: str, query: dict[str, list[str]], body: dict[str, Any]) -> dict[str, Any]:
        """Update an item: comments with an id are kept, those without one are added."""
        ident = {k: [body[k]] for k in ("id", "item_id") if body.get(k)}
        stored = self._find_item(space, {**ident, "namespace_type": [self._ns(body.get("namespace_type"))]})
        if body.get("_version") and body["_version"] != stored["_version"]:
            raise _error(409, "Conflict: the item was updated since it was read")
        kept = {c["id"]: c for c in stored["comments"]}
        comments = []
        for c in body.get("comments") or []:
            if c.get("id"):
                if c["id"] not in kept:
                    raise _error(404, f'comment id: "{c["id"]}" does not exist')
                comments.append(kept[c["id"]])
            else:
                comments.append(self._comment(c))
        for key in ("name", "description", "type", "entries", "os_types", "tags", "meta", "expire_time"):
            if key in body:
                stored[key] = copy.deepcopy(body[key])
            elif key in ("expire_time", "meta"):
                stored.pop(key, None)
        stored.update(comments=comments, _version=self.state.next_version(), updated_at=self.now())
        self._check("ExceptionListItem", stored)
        return copy.deepcopy(stored)

    def item_delete(self, space: str, query: dict[str, list[str]], body: Any) -> dict[str, Any]:
        """Delete one item."""
        stored = self._find_item(space, query)
        del self.items(space, stored["namespace_type"])[stored["item_id"]]
        return stored

    def find_items(self, space: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """Items of the given lists (404 when a list does not exist)."""
        list_ids = [x for raw in query["list_id"] for x in raw.split(",")]
        namespaces = [x for raw in query.get("namespace_type", ["single"]) for x in raw.split(",")]
        found: list[dict[str, Any]] = []
        for i, list_id in enumerate(list_ids):
            ns = self._ns(namespaces[i] if i < len(namespaces) else "single")
            if list_id not in self.lists(space, ns):
                raise _error(404, f'exception list list_id: "{list_id}" does not exist')
            found.extend(v for v in self.items(space, ns).values() if v["list_id"] == list_id)
        return _page(found, query)

    # -- used by the rules routes --------------------------------------------------------------

    def resolve_reference(self, space: str, ref: dict[str, Any]) -> dict[str, Any] | None:
        """A rule's exceptions_list entry with `id` rewritten to the stored list's, None when no list matches."""
        stored = self.lists(space, self._ns(ref.get("namespace_type"))).get(ref.get("list_id"))
        if stored is None or stored["type"] != ref.get("type"):
            return None
        return {**ref, "id": stored["id"]}

    def export_lines(self, space: str, refs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
        """The list and item objects `_export` adds for the rules' references: (objects, lists, items)."""
        out: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        lists = items = 0
        for ref in refs:
            ns = self._ns(ref.get("namespace_type"))
            key = (ns, ref.get("list_id"))
            stored = self.lists(space, ns).get(ref.get("list_id"))
            if stored is None or key in seen or ref.get("list_id") == "endpoint_list":
                continue
            seen.add(key)
            out.append(copy.deepcopy(stored))
            lists += 1
            for item in self.items(space, ns).values():
                if item["list_id"] == stored["list_id"]:
                    out.append(copy.deepcopy(item))
                    items += 1
        return out, lists, items


def _page(found: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    page = int(query.get("page", ["1"])[-1])
    per_page = int(query.get("per_page", ["20"])[-1])
    found.sort(key=lambda x: (x["created_at"], x["id"]))
    start = (page - 1) * per_page
    return {
        "data": [copy.deepcopy(x) for x in found[start : start + per_page]],
        "page": page,
        "per_page": per_page,
        "total": len(found),
    }
