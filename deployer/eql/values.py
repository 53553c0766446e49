"""Value semantics of the offline evaluator: timestamps, field access, mapping types, comparisons.

Events are nested ECS dicts; keys with dots (``{"process.pid": 1}``) are object paths, as
Elasticsearch treats them. A field reads as a *raw* value: ``None`` (missing or null), a scalar,
or a list (multi-valued). :func:`values_of` flattens a raw value into the list of non-null values
Elasticsearch would index.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "MISSING",
    "KEYWORD_TYPES",
    "parse_timestamp",
    "format_timestamp",
    "make_getter",
    "values_of",
    "first_value",
    "FieldType",
    "field_type",
    "es_string",
    "compare",
    "equals",
    "version_key",
    "java_div",
    "java_mod",
]


class _Missing:
    """Marker for "the document has no such key" (distinct from an explicit JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# ---------------------------------------------------------------- timestamps

_EPOCH_RE = re.compile(r"^[+-]?\d+(?:\.\d+)?$")
_ISO_RE = re.compile(
    r"^(?P<y>[+-]?\d{4,})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[Tt ](?P<h>\d{2})(?::(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d+))?)?)?)?"
    r"\s*(?P<z>[Zz]|[+-]\d{2}(?::?\d{2})?)?$"
)
_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()
# "YYYY-MM-DDTHH:MM:SS" -> epoch ms of that second (UTC), filled by the slow path.
_SECONDS_CACHE: dict[str, int] = {}
# Seconds kept: time-ordered input reuses only the current second, and a file of millions of
# events spans tens of thousands of them, so a large bound only grows memory with the input.
SECONDS_CACHED = 4096


def parse_timestamp(value: Any) -> int:
    """Return epoch milliseconds from an ISO-8601 string or an epoch-millis number/numeric string."""
    if value.__class__ is str:
        # Fast path for the usual `2024-05-04T12:00:00.000Z` shape: the seconds prefix is cached.
        n = len(value)
        if (n == 24 and value[19] == "." and value[23] == "Z") or (n == 20 and value[19] == "Z"):
            base = _SECONDS_CACHE.get(value[:19])
            if base is not None:
                frac = value[20:23]
                if n == 20:
                    return base
                if frac.isdigit():
                    return base + int(frac)
    if isinstance(value, bool):
        raise ValueError(f"invalid timestamp {value!r}: a boolean is not a date")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"invalid timestamp {value!r}: not a finite number")
        return math.floor(value)
    if isinstance(value, str):
        text = value.strip()
        if _EPOCH_RE.match(text):
            return int(text) if "." not in text else math.floor(float(text))
        m = _ISO_RE.match(text)
        if m:
            try:
                result = _iso_to_ms(m)
            except ValueError as exc:
                raise ValueError(f"invalid timestamp {value!r}: {exc}") from None
            if text is value and len(value) in (20, 24) and value[19] in ".Z" and m["z"] == "Z":
                if len(_SECONDS_CACHE) >= SECONDS_CACHED:
                    _SECONDS_CACHE.clear()
                _SECONDS_CACHE[value[:19]] = result - result % 1000
            return result
        raise ValueError(
            f"invalid timestamp {value!r}: expected ISO-8601 (e.g. 2024-05-04T12:00:00.000Z) "
            "or epoch milliseconds"
        )
    raise ValueError(
        f"invalid timestamp {value!r} ({type(value).__name__}): expected an ISO-8601 string or epoch milliseconds"
    )


def _iso_to_ms(m: re.Match[str]) -> int:
    year, month, day = int(m["y"]), int(m["mo"]), int(m["d"])
    hour = int(m["h"] or 0)
    minute = int(m["mi"] or 0)
    second = int(m["s"] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError("time of day out of range")
    # datetime validates the calendar date (month length, leap years).
    days = datetime(year, month, day).toordinal() - _EPOCH_ORDINAL
    frac = m["f"] or ""
    # Elasticsearch `date` keeps millisecond precision: extra digits are truncated, not rounded.
    millis = int((frac + "000")[:3]) if frac else 0
    total = ((days * 24 + hour) * 60 + minute) * 60 + second
    zone = m["z"]
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + (int(digits[2:4]) * 60 if len(digits) > 2 else 0)
        total -= sign * offset
    return total * 1000 + millis


def format_timestamp(millis: int) -> str:
    """Format epoch milliseconds the way Elasticsearch prints dates (``1970-01-01T00:00:00.000Z``)."""
    dt = datetime.fromtimestamp(millis // 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis % 1000:03d}Z"


# ---------------------------------------------------------------- field access


def _collect(value: Any, out: list[Any]) -> None:
    # Objects are not values: a path that ends on an object (or on objects inside an array)
    # has no value there, as in Elasticsearch.
    if value is None or isinstance(value, dict):
        return
    if isinstance(value, list):
        for item in value:
            _collect(item, out)
    else:
        out.append(value)


def values_of(raw: Any) -> list[Any]:
    """Flatten a raw field value into its non-null values (arrays of arrays included)."""
    if raw is None or raw is MISSING:
        return []
    if raw.__class__ is list:
        for item in raw:
            if item is None or item.__class__ is list or item.__class__ is dict:
                out: list[Any] = []
                _collect(raw, out)
                return out
        # Already flat and null-free (the common case): no copy.
        return raw
    return [raw]


def first_value(raw: Any) -> Any:
    """The first non-null value of a raw field value (a list's first value), None when it has none."""
    if raw.__class__ is list:
        flat = values_of(raw)
        return flat[0] if flat else None
    return raw


def _resolve(obj: Any, parts: tuple[str, ...], start: int, out: list[Any]) -> bool:
    """Append the values at ``parts[start:]`` under ``obj``; return True when a key was present."""
    if isinstance(obj, list):
        found = False
        for item in obj:
            found = _resolve(item, parts, start, out) or found
        return found
    if not isinstance(obj, dict):
        return False
    found = False
    n = len(parts)
    # Any split of the remaining path may be spelled as one dotted key ("process.pid") or as
    # nested objects; Elasticsearch merges them, so every split is tried.
    for end in range(start + 1, n + 1):
        key = parts[start] if end == start + 1 else ".".join(parts[start:end])
        if key not in obj:
            continue
        value = obj[key]
        if end == n:
            found = True
            _collect(value, out)
        else:
            found = _resolve(value, parts, end, out) or found
    return found


def _general_getter(parts: tuple[str, ...], keep_missing: bool) -> Callable[[dict], Any]:
    def get(event: dict) -> Any:
        out: list[Any] = []
        found = _resolve(event, parts, 0, out)
        if not found:
            return MISSING if keep_missing else None
        if len(out) == 1 and not isinstance(out[0], list):
            return out[0]
        return out

    return get


class DotFree(dict):
    """A document whose reader found no key with a dot in it, at any depth.

    In such a document a miss on the nested path is a miss: no dotted spelling of the rest of
    the path can exist, so the getters skip looking for one.
    """

    __slots__ = ()


def make_getter(path: str | tuple[str, ...], keep_missing: bool = False) -> Callable[[dict], Any]:
    """Build a fast reader for ``path``: returns None/MISSING, a scalar, or a list of values.

    With ``keep_missing`` an absent key reads as :data:`MISSING` and an explicit null as None
    (needed for ``null_value`` mappings); otherwise both read as None.
    """
    parts = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
    slow = _general_getter(parts, keep_missing)
    miss = MISSING if keep_missing else None
    # Fast paths for the common nested-dict shapes; anything unusual (dotted keys, arrays of
    # objects) falls back to the general resolver, so the fast path never changes the answer.
    if len(parts) == 1:
        (a,) = parts
        if keep_missing:

            def get1(event: dict) -> Any:
                v = event.get(a, MISSING)
                return v if v.__class__ is not dict else miss

            return get1

        def get1n(event: dict) -> Any:
            v = event.get(a)
            return v if v.__class__ is not dict else None

        return get1n
    if len(parts) == 2:
        a, b = parts
        dotted = f"{a}.{b}"

        if keep_missing:

            def get2m(event: dict) -> Any:
                o = event.get(a)
                if o.__class__ is dict:
                    v = o.get(b, MISSING)
                    if v is not MISSING and v.__class__ is not dict:
                        return v
                elif o is None and dotted not in event:
                    return MISSING
                return slow(event)

            return get2m

        def get2(event: dict) -> Any:
            o = event.get(a)
            if o.__class__ is dict:
                v = o.get(b)
                if v is not None:
                    if v.__class__ is not dict:
                        return v
                    return slow(event)
                if dotted not in event:
                    return None
            elif o is None and dotted not in event:
                return None
            return slow(event)

        return get2
    # Deeper paths: a miss on the nested path is answered at once when no dotted spelling of the
    # rest of the path exists on the way (optional ECS fields such as `process.pe.*` are mostly
    # absent, and the general resolver would try every dotted split to say so).
    inner = parts[:-1]
    last = parts[-1]
    # Dotted spellings of the rest of the path under the object at each depth ("b.c" under `a`).
    spellings = [tuple(".".join(parts[d:j]) for j in range(d + 2, len(parts) + 1)) for d in range(len(inner))]

    # A reader-marked document answers a miss without the dotted-spelling search.
    dot_free = DotFree.__instancecheck__

    def absent(event: dict, depth: int) -> bool:
        # Nothing on the nested path down to `depth`: absent unless spelled with dots on the way.
        obj = event
        for d in range(depth + 1):
            if d:
                obj = obj[inner[d - 1]]
            for k in spellings[d]:
                if k in obj:
                    return False
        return True

    if len(parts) == 3:
        a, b = inner

        def get3(event: dict) -> Any:
            # The loop below, unrolled for the usual three-part ECS path.
            o = event.get(a)
            if o.__class__ is dict:
                o = o.get(b)
                if o.__class__ is dict:
                    v = o.get(last, MISSING)
                    if v is MISSING:
                        return miss if (dot_free(event) or absent(event, 1)) else slow(event)
                    return v if v.__class__ is not dict else slow(event)
                return miss if o is None and (dot_free(event) or absent(event, 1)) else slow(event)
            return miss if o is None and (dot_free(event) or absent(event, 0)) else slow(event)

        return get3

    def get(event: dict) -> Any:
        obj = event
        for i, key in enumerate(inner):
            nxt = obj.get(key)
            if nxt.__class__ is dict:
                obj = nxt
                continue
            if nxt is None and (dot_free(event) or absent(event, i)):
                return miss
            return slow(event)  # an array of objects, a value in the way, or dotted keys
        if last not in obj and (dot_free(event) or absent(event, len(inner) - 1)):
            return miss
        return slow(event)

    return get


# ---------------------------------------------------------------- mapping types

KEYWORD_TYPES = frozenset({"keyword", "wildcard", "constant_keyword", "text", "match_only_text"})
_INT_TYPES = frozenset({"long", "integer", "short", "byte", "unsigned_long"})
_FLOAT_TYPES = frozenset({"double", "float", "half_float", "scaled_float"})
_DATE_TYPES = frozenset({"date", "date_nanos"})


class FieldType:
    """What the mapping says about one field: ES type, alias target, ``null_value``, ``ignore_above``."""

    __slots__ = ("name", "es_type", "alias_of", "null_value", "ignore_above", "declared")

    def __init__(
        self,
        name: str,
        es_type: str = "keyword",
        alias_of: str | None = None,
        null_value: Any = None,
        ignore_above: int | None = None,
        declared: bool = False,
    ) -> None:
        self.name = name
        self.es_type = es_type
        self.alias_of = alias_of
        self.null_value = null_value
        self.ignore_above = ignore_above
        self.declared = declared

    @property
    def is_date(self) -> bool:
        """True for date and date_nanos."""
        return self.es_type in _DATE_TYPES

    @property
    def is_numeric(self) -> bool:
        """True for the integer and floating-point types."""
        return self.es_type in _INT_TYPES or self.es_type in _FLOAT_TYPES

    def coercer(self) -> Callable[[Any], Any] | None:
        """Function turning a source value into the indexed value (None when identity)."""
        t = self.es_type
        if not self.declared:
            return None
        if t in KEYWORD_TYPES:
            limit = self.ignore_above
            if limit is None:
                return _to_keyword
            # Values longer than ignore_above are not indexed: they can never match.
            return lambda v: _ignore_long(_to_keyword(v), limit)
        if t in _INT_TYPES:
            return _to_int
        if t in _FLOAT_TYPES:
            return _to_float
        if t in _DATE_TYPES:
            return _to_date
        if t == "ip":
            return _to_ip
        if t == "boolean":
            return _to_bool
        if t == "version":
            return _to_keyword
        return None

    def convert_literal(self, value: Any) -> Any:
        """Convert a query constant to this field's value space (``"2017-01-01"`` → ms for dates)."""
        if value is None or not self.declared:
            return value
        try:
            conv = self.coercer()
            return conv(value) if conv is not None else value
        except (ValueError, TypeError):
            return value


def _to_keyword(v: Any) -> Any:
    if v.__class__ is str:
        return v
    return es_string(v)


def _ignore_long(v: Any, limit: int) -> Any:
    return None if isinstance(v, str) and len(v) > limit else v


def _to_int(v: Any) -> Any:
    if v.__class__ is int:
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            return int(float(v))
    if isinstance(v, float):
        return int(v)
    return v


def _to_float(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float | str):
        return float(v)
    return v


def _to_date(v: Any) -> Any:
    return parse_timestamp(v)


def _to_ip(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            return v
    return v


def _to_bool(v: Any) -> Any:
    if isinstance(v, str):
        if v == "true":
            return True
        if v == "false" or v == "":
            return False
    return v


def field_type(spec: Any, name: str) -> FieldType:
    """Build a FieldType from a ``field_types`` entry: an ES type name or a mapping property dict."""
    if spec is None:
        return FieldType(name)
    if isinstance(spec, str):
        return FieldType(name, spec, declared=True)
    if isinstance(spec, dict):
        es_type = spec.get("type", "object")
        if es_type == "alias":
            return FieldType(name, "alias", alias_of=spec.get("path"), declared=True)
        ignore_above = spec.get("ignore_above")
        if es_type in ("text", "match_only_text"):
            # Elasticsearch EQL queries a text field through its keyword sub-field.
            for sub in (spec.get("fields") or {}).values():
                if isinstance(sub, dict) and sub.get("type") in ("keyword", "wildcard"):
                    ignore_above = sub.get("ignore_above")
                    break
        return FieldType(
            name,
            es_type,
            null_value=spec.get("null_value"),
            ignore_above=ignore_above,
            declared=True,
        )
    raise TypeError(f"field_types[{name!r}] must be a type name or a mapping dict, not {type(spec).__name__}")


# ---------------------------------------------------------------- strings and comparisons


def es_string(v: Any) -> str:
    """Render a value the way Elasticsearch scripts stringify it (Java ``toString``)."""
    if v.__class__ is str:
        return v
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, float):
        return _java_double(v)
    return str(v)


def _java_double(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    if v == 0:
        return "-0.0" if math.copysign(1.0, v) < 0 else "0.0"
    a = abs(v)
    if 1e-3 <= a < 1e7:
        text = repr(v)
        return text if ("." in text or "e" in text) else text + ".0"
    # Java switches to computerised scientific notation outside [1e-3, 1e7), with the shortest
    # digits that round-trip (which repr also gives).
    sign, digits, exp = Decimal(repr(v)).normalize().as_tuple()
    text = "".join(str(d) for d in digits)
    exponent = len(digits) - 1 + int(exp)
    mant = text[0] + "." + (text[1:] or "0")
    return f"{'-' if sign else ''}{mant}E{exponent}"


def _is_number(v: Any) -> bool:
    return (v.__class__ is int or v.__class__ is float) or (
        isinstance(v, int | float) and not isinstance(v, bool)
    )


def _parse_number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def compare(a: Any, b: Any) -> int | None:
    """Three-way compare with Elasticsearch rules; None when either side is null or types differ."""
    if a is None or b is None:
        return None
    ca, cb = a.__class__, b.__class__
    if ca is str and cb is str:
        return (a > b) - (a < b)
    if _is_number(a) and _is_number(b):
        return (a > b) - (a < b)
    if ca is bool and cb is bool:
        return (a > b) - (a < b)
    # A numeric field compared with a numeric string literal (or the reverse): Elasticsearch
    # parses the constant into the field's type.
    if ca is str and _is_number(b):
        na = _parse_number(a)
        return None if na is None else (na > b) - (na < b)
    if cb is str and _is_number(a):
        nb = _parse_number(b)
        return None if nb is None else (a > nb) - (a < nb)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return (a > b) - (a < b)
    return None


def equals(a: Any, b: Any) -> bool | None:
    """Case-sensitive equality with Elasticsearch rules; None when either side is null."""
    if a is None or b is None:
        return None
    if a.__class__ is b.__class__:
        return a == b
    c = compare(a, b)
    return None if c is None else c == 0


# ---------------------------------------------------------------- version type

_SEMVER_RE = re.compile(
    r"^(?P<nums>\d+(?:\.\d+)*)(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$"
)


def version_key(v: Any) -> tuple:
    """Sort key of the ``version`` type: valid semver by precedence, invalid ones after, by text."""
    text = es_string(v)
    m = _SEMVER_RE.match(text)
    if not m:
        return (1, text)
    nums = tuple(int(p) for p in m["nums"].split("."))
    pre = m["pre"]
    if pre is None:
        # A release sorts after all of its pre-releases.
        pre_key: tuple = (1,)
    else:
        parts = []
        for ident in pre.split("."):
            parts.append((0, int(ident), "") if ident.isdigit() else (1, 0, ident))
        pre_key = (0, tuple(parts))
    return (0, nums, pre_key)


# ---------------------------------------------------------------- Java integer arithmetic


def java_div(a: Any, b: Any) -> Any:
    """Division as Elasticsearch scripts do it: integer operands truncate toward zero."""
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) and not isinstance(b, bool):
        if b == 0:
            return None
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    if b == 0:
        if a == 0:
            return math.nan
        return math.inf if (a > 0) == (math.copysign(1.0, b) > 0) else -math.inf
    return a / b


def java_mod(a: Any, b: Any) -> Any:
    """Remainder with Java rules: the sign follows the dividend."""
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        if b == 0:
            return None
        r = abs(a) % abs(b)
        return r if a >= 0 else -r
    if b == 0:
        return math.nan
    return math.fmod(a, b)
