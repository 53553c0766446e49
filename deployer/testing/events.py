"""Read ECS events from newline-delimited JSON (a file, `-` for stdin, or gzip by magic bytes).

Every problem is an `EventsError` naming the source and the 1-based line number, so a bad line in
a fixture or an export is found without a traceback. Values whose type contradicts the ECS field
registry are rejected the way Elasticsearch would reject the document at index time, and the
coercions Elasticsearch applies by default (numeric strings into numeric fields, scalars into
keyword fields) are applied here too, so the offline evaluator compares what Elasticsearch would.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import math
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

# One timestamp parser for the whole tool: the evaluator's, so the reader accepts exactly what
# the evaluator orders by.
from deployer.eql.values import DotFree, es_string, parse_timestamp

GZIP_MAGIC = b"\x1f\x8b"
TIMESTAMP_FIELD = "@timestamp"

# ECS type families; anything not listed (object, nested, flattened, geo_point, text...) is not
# checked because Elasticsearch accepts a wide range of shapes there.
_INTEGER_TYPES = frozenset({"long", "integer", "short", "byte", "unsigned_long"})
_FLOAT_TYPES = frozenset({"float", "double", "half_float", "scaled_float"})
_KEYWORD_TYPES = frozenset({"keyword", "constant_keyword", "wildcard"})
_TEXT_TYPES = frozenset({"match_only_text", "text"})

FieldTypeLookup = Callable[[str], "str | None"]


class EventsError(Exception):
    """A bad events file: carries the source name, the 1-based line (None when not line-bound) and the problem."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.message}"


class Event(dict):
    """One event as read from the file; `line` is its 1-based line number there."""

    __slots__ = ("line",)

    def __init__(self, data: dict[str, Any], line: int) -> None:
        super().__init__(data)
        self.line = line


class DotFreeEvent(Event, DotFree):
    """An event in which the reader found no dotted key: field reads skip the dotted-spelling search."""

    __slots__ = ()


def display_name(path: str | Path) -> str:
    """How a source is named in messages: `<stdin>` for `-`, else the path as given."""
    return "<stdin>" if str(path) == "-" else str(path)


def default_field_types() -> FieldTypeLookup | None:
    """The ECS field registry's type lookup, or None when the registry is not available."""
    try:
        from deployer.ecs import registry
    except ImportError:
        return None
    reg = registry.load()
    # Large replays look the same few hundred names up millions of times.
    cache: dict[str, str | None] = {}

    def lookup(name: str) -> str | None:
        try:
            return cache[name]
        except KeyError:
            info = reg.get(name)
            cache[name] = found = None if info is None else info.type
            return found

    return lookup


def _open_binary(path: str | Path, stdin: IO[bytes] | None, name: str) -> tuple[IO[bytes], bool]:
    """Open the raw byte stream and say whether we own it (stdin is never closed here)."""
    if str(path) == "-":
        return (stdin if stdin is not None else sys.stdin.buffer), False
    try:
        return open(path, "rb"), True  # noqa: SIM115 - closed by the caller's finally
    except OSError as exc:
        raise EventsError(name, None, f"cannot open: {exc.strerror or exc}") from None


def _maybe_gunzip(raw: IO[bytes]) -> IO[bytes]:
    # Sniff the gzip magic rather than trust the extension: exports are often renamed, and stdin
    # has no name at all. A one-byte look-ahead buffer keeps the stream readable from the start.
    import io

    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
    head = buffered.peek(2)[:2]
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered


def iter_lines(
    path: str | Path, *, stdin: IO[bytes] | None = None, name: str | None = None
) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (line number, raw bytes without the newline, whether the line ended with a newline)."""
    name = display_name(path) if name is None else name
    raw, owned = _open_binary(path, stdin, name)
    try:
        stream = _maybe_gunzip(raw)
        lineno = 0
        try:
            for chunk in stream:
                lineno += 1
                ended = chunk.endswith(b"\n")
                yield lineno, chunk.rstrip(b"\r\n"), ended
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise EventsError(name, lineno + 1, f"corrupt or truncated gzip data: {exc}") from None
        except OSError as exc:
            raise EventsError(name, lineno + 1, f"read error: {exc}") from None
    finally:
        if owned:
            raw.close()


def iter_events(
    path: str | Path,
    *,
    field_types: FieldTypeLookup | None = None,
    stdin: IO[bytes] | None = None,
    name: str | None = None,
) -> Iterator[Event]:
    """Yield each non-blank line of an ndjson events source as an `Event`, raising `EventsError` on bad input."""
    for event, _ in iter_timed_events(path, field_types=field_types, stdin=stdin, name=name):
        yield event


def iter_timed_events(
    path: str | Path,
    *,
    field_types: FieldTypeLookup | None = None,
    stdin: IO[bytes] | None = None,
    name: str | None = None,
) -> Iterator[tuple[Event, int]]:
    """Like `iter_events`, with each event's `@timestamp` in epoch ms; `name` overrides the source name in errors."""
    for event, ts, _ in iter_checked_lines(path, field_types=field_types, stdin=stdin, name=name):
        yield event, ts


def iter_checked_lines(
    path: str | Path,
    *,
    field_types: FieldTypeLookup | None = None,
    stdin: IO[bytes] | None = None,
    name: str | None = None,
) -> Iterator[tuple[Event, int, str]]:
    """Yield (event, `@timestamp` in epoch ms, the line's text) for each non-blank line, raising `EventsError`."""
    shown = display_name(path) if name is None else name
    parse = LineParser(field_types, shown)
    for lineno, raw_line, ended in iter_lines(path, stdin=stdin, name=shown):
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventsError(shown, lineno, f"not UTF-8 (byte {exc.start + 1}): {exc.reason}") from None
        if lineno == 1:
            text = text.removeprefix("\ufeff")
        if not text or text.isspace():
            continue
        event, ts = parse(text, lineno, ended)
        yield event, ts, text


class LineParser:
    """Parses and checks one ndjson line into an `Event`; the same text always gives the same event."""

    def __init__(self, field_types: FieldTypeLookup | None, name: str) -> None:
        self._checker = FieldChecker(field_types) if field_types is not None else None
        self._name = name
        # The C scanner behind json.loads, without its per-call wrapper; any line it does not
        # accept whole goes through json.loads, which gives the error message.
        self._scan = json.JSONDecoder().scan_once

    def __call__(self, text: str, lineno: int, ended: bool = True) -> tuple[Event, int]:
        """The event on a non-blank line and its `@timestamp` in epoch ms; raises `EventsError`."""
        shown = self._name
        try:
            obj, end = self._scan(text, 0)
            # json.loads allows exactly these four characters after the value.
            if end != len(text) and text[end:].strip(" \t\n\r"):
                raise ValueError("trailing data")
        except (ValueError, StopIteration, RecursionError):
            obj = None
            end = -1
        try:
            if end < 0:
                obj = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = ""
            # A complete event ends with "}"; a last line that does not, and has no newline, was cut.
            if not ended and not text.rstrip().endswith("}"):
                hint = " (the last line ends without a newline: the file looks truncated)"
            raise EventsError(shown, lineno, f"invalid JSON at column {exc.colno}: {exc.msg}{hint}") from None
        except RecursionError:
            raise EventsError(shown, lineno, "invalid JSON: nested too deeply") from None
        if obj.__class__ is not dict:
            raise EventsError(
                shown, lineno, f"expected a JSON object (one event per line), got {_json_kind(obj)}"
            )
        ts = _check_timestamp(obj, shown, lineno)
        if self._checker is not None and self._checker.check(obj, shown, lineno):
            return DotFreeEvent(obj, lineno), ts
        return Event(obj, lineno), ts


def read_events(
    path: str | Path,
    *,
    field_types: FieldTypeLookup | None = None,
    stdin: IO[bytes] | None = None,
    name: str | None = None,
) -> list[Event]:
    """Read a whole ndjson events source into a list (see `iter_events`)."""
    return list(iter_events(path, field_types=field_types, stdin=stdin, name=name))


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _check_timestamp(event: dict[str, Any], source: str, line: int) -> int:
    """Validate `@timestamp` and return it in epoch ms."""
    try:
        ts = event[TIMESTAMP_FIELD]
    except KeyError:
        raise EventsError(
            source, line, f"missing {TIMESTAMP_FIELD} (every event needs one to be ordered)"
        ) from None
    if isinstance(ts, bool) or not isinstance(ts, str | int | float) or ts == "":
        raise EventsError(
            source, line, f"{TIMESTAMP_FIELD} must be an ISO-8601 string or epoch milliseconds, got {ts!r}"
        )
    try:
        return parse_timestamp(ts)
    except (ValueError, TypeError, OverflowError) as exc:
        raise EventsError(
            source,
            line,
            f"unparsable {TIMESTAMP_FIELD}: {exc}",
        ) from None


_NONE = type(None)
# Value classes `_coerce` returns unchanged for a type family: the per-field fast path skips the
# call for them. `None` means every scalar is kept as is (types the reader does not check).
_KEEP: dict[str, frozenset[type] | None] = {
    **{t: frozenset({int, _NONE}) for t in _INTEGER_TYPES},
    **{t: frozenset({int, float, _NONE}) for t in _FLOAT_TYPES},
    **{t: frozenset({str, _NONE}) for t in _KEYWORD_TYPES | _TEXT_TYPES},
    "boolean": frozenset({bool, _NONE}),
    "ip": frozenset({_NONE}),
    "date": frozenset({_NONE}),
}
_OBJECT_TYPES = ("object", "nested", "flattened", "geo_point")
_SCALARS = frozenset({str, int, float, bool, _NONE})
# A bound on the field-name cache: events with unbounded key sets (maps keyed by ids) must not
# make it grow with the file.
_MAX_CACHED_FIELDS = 50_000
_MAX_CACHED_IPS = 65_536


class _Field:
    """What the checker knows about one field path: its dotted name, ECS type and sub-fields."""

    __slots__ = ("name", "ftype", "keep", "skip", "children", "dotted")

    def __init__(self, name: str, ftype: str | None, skip: frozenset[type] | None = None) -> None:
        self.name = name
        # The key itself (not the path) has a dot: `{"process.name": ...}`.
        self.dotted = False
        self.ftype = ftype
        self.keep = _KEEP.get(ftype) if ftype is not None else None
        # Value classes that need no work at all here: one set lookup settles most fields.
        self.skip = skip if skip is not None else (_SCALARS if self.keep is None else self.keep)
        self.children: dict[str, _Field] = {}


class FieldChecker:
    """Checks and coerces events against a field-type lookup; the per-field decisions are cached by key path."""

    def __init__(self, lookup: FieldTypeLookup) -> None:
        self._lookup = lookup
        self._root: dict[str, _Field] = {}
        self._cached = 0
        self._dotted = False
        # Addresses repeat across events; validating each distinct string once is enough.
        self._good_ips: set[str] = set()
        if lookup(TIMESTAMP_FIELD) in ("date", None):
            # `_check_timestamp` has already accepted exactly what the date check would.
            self._root[TIMESTAMP_FIELD] = _Field(TIMESTAMP_FIELD, None, _SCALARS)

    def check(self, event: dict[str, Any], source: str, line: int) -> bool:
        """Raise `EventsError` on a value Elasticsearch would reject; coerce the others in place.

        Returns whether no object on a path of objects from the root has a key with a dot in it
        (what `DotFree` promises the getters).
        """
        self._dotted = False
        self._object(event, self._root, "", source, line)
        return not self._dotted

    def _field(self, node: dict[str, _Field], prefix: str, key: str) -> _Field:
        name = f"{prefix}{key}"
        field = _Field(name, self._lookup(name))
        field.dotted = "." in key
        if self._cached < _MAX_CACHED_FIELDS:
            node[key] = field
            self._cached += 1
        return field

    def _object(
        self, obj: dict[str, Any], node: dict[str, _Field], prefix: str, source: str, line: int
    ) -> None:
        for key, value in obj.items():
            field = node.get(key)
            if field is None:
                field = self._field(node, prefix, key)
            if field.dotted:
                self._dotted = True
            cls = value.__class__
            if cls in field.skip:
                continue
            ftype = field.ftype
            if cls is dict or (cls is not list and isinstance(value, dict)):
                if ftype is not None and ftype not in _OBJECT_TYPES:
                    raise EventsError(
                        source, line, f"field {field.name!r} is {ftype} in ECS but the value is an object"
                    )
                if ftype != "flattened" and ftype != "geo_point":
                    self._object(value, field.children, f"{field.name}.", source, line)
                else:
                    self._dotted = True  # not walked: its keys are unknown
                continue
            if ftype is None:
                continue
            if cls is list or isinstance(value, list):
                obj[key] = self._array(value, field, source, line)
                continue
            keep = field.keep
            if keep is None or cls in keep:
                continue
            if ftype == "ip" and cls is str and value in self._good_ips:
                continue
            else:
                obj[key] = _coerce(value, field.name, ftype, source, line)
                if ftype == "ip" and len(self._good_ips) < _MAX_CACHED_IPS:
                    self._good_ips.add(value)

    def _array(self, value: list[Any], field: _Field, source: str, line: int) -> list[Any]:
        # Elasticsearch flattens arrays of arrays; so does the reader, so the evaluator sees the
        # same values.
        flat = value
        for v in value:
            if isinstance(v, list):
                flat = _flatten(value)
                break
        ftype = field.ftype
        assert ftype is not None
        keep = field.keep or ()
        for i, item in enumerate(flat):
            cls = item.__class__
            if cls in keep:
                continue
            if isinstance(item, dict):
                if ftype == "object" or ftype == "nested":
                    self._object(item, field.children, f"{field.name}.", source, line)
                    continue
                raise EventsError(
                    source, line, f"field {field.name!r} is {ftype} in ECS but element {i} is an object"
                )
            flat[i] = _coerce(item, field.name, ftype, source, line)
        return flat


def _flatten(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, list):
            out.extend(_flatten(v))
        else:
            out.append(v)
    return out


def _coerce(value: Any, name: str, ftype: str, source: str, line: int) -> Any:
    """Return the value Elasticsearch would index for an ECS type, or raise on a value it would reject."""
    if value is None:
        return None

    def reject(why: str) -> EventsError:
        return EventsError(
            source,
            line,
            f"field {name!r} is {ftype} in ECS but the value {value!r} {why}; Elasticsearch would reject "
            "this document (fix the value or remove the field)",
        )

    if ftype in _INTEGER_TYPES:
        if isinstance(value, bool):
            raise reject("is a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            # Elasticsearch truncates a fractional number into an integer field; keep it exact here.
            if not math.isfinite(value):
                raise reject("is not finite")
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    number = float(value.strip())
                except ValueError:
                    raise reject("is a string that is not a number") from None
                if not math.isfinite(number):
                    raise reject("is not finite") from None
                return int(number)
        raise reject("is not a number")
    if ftype in _FLOAT_TYPES:
        if isinstance(value, bool):
            raise reject("is a boolean")
        if isinstance(value, int | float):
            return value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise reject("is a string that is not a number") from None
            if not math.isfinite(number):
                raise reject("is not finite")
            return number
        raise reject("is not a number")
    if ftype == "boolean":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        if value == "":
            return False
        raise reject("is not true/false")
    if ftype == "ip":
        if not isinstance(value, str):
            raise reject("is not a string")
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise reject("is not an IP address") from None
        return value
    if ftype == "date":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise reject("is not a date")
        try:
            parse_timestamp(value)
        except (ValueError, TypeError, OverflowError):
            raise reject("is not an ISO-8601 date or epoch milliseconds") from None
        return value
    if ftype in _KEYWORD_TYPES or ftype in _TEXT_TYPES:
        # Elasticsearch indexes a number or boolean in a keyword field as its string form (Java's
        # rendering); the evaluator must compare the same string, so convert here.
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return es_string(value)
        raise reject("is not a scalar")
    return value
