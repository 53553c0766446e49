"""EQL functions with Elasticsearch semantics (null in, null out; Java arithmetic and string rules).

Each implementation takes the evaluated arguments (already scalar: multi-valued fields are
expanded by the caller) and the ``~`` flag. :data:`FUNCTIONS` maps lower-cased names to specs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from deployer.eql.values import es_string, java_div, java_mod

__all__ = ["FunctionSpec", "FUNCTIONS", "lookup", "check_literal_args", "call"]

# Argument kinds used for the checks Elasticsearch's verifier does on constant arguments.
STR, NUM, BOOL, ANY = "string", "number", "boolean", "any"


@dataclass(frozen=True)
class FunctionSpec:
    """Name, arity, argument kinds, whether ``name~`` exists, and the implementation."""

    name: str
    min_args: int
    max_args: int | None
    kinds: tuple[str, ...]  # kind of each positional argument; the last one repeats
    case_aware: bool
    impl: Callable[..., Any]

    def kind(self, index: int) -> str:
        """Expected kind of argument ``index``."""
        return self.kinds[min(index, len(self.kinds) - 1)]


def _s(v: Any) -> str:
    return v if v.__class__ is str else es_string(v)


def _num(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return v


# ---------------------------------------------------------------- string functions


def _between(ci: bool, src: Any, left: Any, right: Any, greedy: Any = False) -> Any:
    if src is None or left is None or right is None:
        return None
    string, left, right = _s(src), _s(left), _s(right)
    match = string
    if ci:
        match, left, right = string.lower(), left.lower(), right.lower()
    idx = match.find(left)
    if idx < 0:
        return ""
    start = idx + len(left)
    # Java's lastIndexOf("") is the string length; Python's rfind agrees.
    end = match.rfind(right) if greedy is True else match.find(right, start)
    if end < 0 or end < start:
        return ""
    return string[start:end]


def _starts_with(ci: bool, src: Any, prefix: Any) -> Any:
    if src is None or prefix is None:
        return None
    s, p = _s(src), _s(prefix)
    if ci:
        return s.lower().startswith(p.lower())
    return s.startswith(p)


def _ends_with(ci: bool, src: Any, suffix: Any) -> Any:
    if src is None or suffix is None:
        return None
    s, p = _s(src), _s(suffix)
    if ci:
        return s.lower().endswith(p.lower())
    return s.endswith(p)


def _string_contains(ci: bool, src: Any, sub: Any) -> Any:
    if src is None or sub is None:
        return None
    s, p = _s(src), _s(sub)
    if not p:
        # Elasticsearch: an empty substring is never "contained".
        return False
    if ci:
        return p.lower() in s.lower()
    return p in s


def _index_of(ci: bool, src: Any, sub: Any, start: Any = None) -> Any:
    if src is None or sub is None:
        return None
    s, p = _s(src), _s(sub)
    if ci:
        s, p = s.lower(), p.lower()
    begin = 0
    if start is not None:
        begin = _num(start)
        if begin is None:
            return None
        begin = max(int(begin), 0)
    if begin > len(s):
        return None
    idx = s.find(p, begin)
    return None if idx < 0 else idx


def _length(ci: bool, src: Any) -> Any:
    if src is None:
        return None
    return len(_s(src))


def _substring(ci: bool, src: Any, start: Any = None, end: Any = None) -> Any:
    if src is None:
        return None
    s = _s(src)
    a = None if start is None else _num(start)
    b = None if end is None else _num(end)
    if (start is not None and a is None) or (end is not None and b is None):
        return None
    # Python slice semantics, negative offsets counting from the end, as Elasticsearch documents.
    return s[None if a is None else int(a) : None if b is None else int(b)]


def _concat(ci: bool, *args: Any) -> Any:
    if any(a is None for a in args):
        return None
    return "".join(_s(a) for a in args)


def _string(ci: bool, v: Any) -> Any:
    return None if v is None else _s(v)


def _number(ci: bool, src: Any, base: Any = None) -> Any:
    if src is None:
        return None
    text = _s(src).strip()
    radix = 10 if base is None else _num(base)
    if radix is None:
        return None
    radix = int(radix)
    body = text.lstrip("+-")
    sign = "-" if text.startswith("-") else ""
    if body[:2].lower() == "0x" and radix in (10, 16):
        # A 0x prefix means hexadecimal when no other base is asked for.
        try:
            return int(sign + body[2:], 16)
        except ValueError:
            return None
    try:
        return int(text, radix)
    except ValueError:
        pass
    if radix == 10:
        try:
            return float(text)
        except ValueError:
            return None
    return None


# ---------------------------------------------------------------- math


def _arith(op: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    def impl(ci: bool, a: Any, b: Any) -> Any:
        x, y = _num(a), _num(b)
        if x is None or y is None:
            return None
        return op(x, y)

    return impl


# ---------------------------------------------------------------- network


@lru_cache(maxsize=4096)
def _network(cidr: str) -> Any:
    return ipaddress.ip_network(cidr, strict=False)


@lru_cache(maxsize=65536)
def _address(text: str) -> Any:
    return ipaddress.ip_address(text)


def _cidr_match(ci: bool, ip: Any, *cidrs: Any) -> Any:
    if ip is None:
        return None
    try:
        addr = _address(_s(ip))
    except ValueError:
        return None
    for c in cidrs:
        if c is None:
            continue
        try:
            net = _network(_s(c))
        except ValueError:
            continue
        if addr.version == net.version and addr in net:
            return True
    return False


FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name.lower(): spec
    for spec in [
        FunctionSpec("add", 2, 2, (NUM,), False, _arith(lambda a, b: a + b)),
        FunctionSpec("between", 3, 4, (STR, STR, STR, BOOL), True, _between),
        FunctionSpec("cidrMatch", 2, None, (STR, STR), False, _cidr_match),
        FunctionSpec("concat", 1, None, (ANY,), False, _concat),
        FunctionSpec("divide", 2, 2, (NUM,), False, _arith(java_div)),
        FunctionSpec("endsWith", 2, 2, (STR,), True, _ends_with),
        FunctionSpec("indexOf", 2, 3, (STR, STR, NUM), True, _index_of),
        FunctionSpec("length", 1, 1, (STR,), False, _length),
        FunctionSpec("modulo", 2, 2, (NUM,), False, _arith(java_mod)),
        FunctionSpec("multiply", 2, 2, (NUM,), False, _arith(lambda a, b: a * b)),
        FunctionSpec("number", 1, 2, (STR, NUM), False, _number),
        FunctionSpec("startsWith", 2, 2, (STR,), True, _starts_with),
        FunctionSpec("string", 1, 1, (ANY,), False, _string),
        FunctionSpec("stringContains", 2, 2, (STR,), True, _string_contains),
        FunctionSpec("substring", 2, 3, (STR, NUM, NUM), False, _substring),
        FunctionSpec("subtract", 2, 2, (NUM,), False, _arith(lambda a, b: a - b)),
    ]
}


def lookup(name: str) -> FunctionSpec | None:
    """Find a function by name, case-insensitively (Elasticsearch lower-cases names)."""
    return FUNCTIONS.get(name.lower())


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int | float):
        return NUM
    return STR


def check_literal_args(
    spec: FunctionSpec, nargs: int, case_insensitive: bool, constants: dict[int, Any]
) -> str | None:
    """Return the verifier's complaint about a call (arity, ``~``, constant argument kinds), or None."""
    if case_insensitive and not spec.case_aware:
        return f"function {spec.name} has no case-insensitive variant {spec.name}~"
    if nargs < spec.min_args or (spec.max_args is not None and nargs > spec.max_args):
        want = (
            f"{spec.min_args}"
            if spec.min_args == spec.max_args
            else f"{spec.min_args} or more"
            if spec.max_args is None
            else f"{spec.min_args} to {spec.max_args}"
        )
        return f"function {spec.name} takes {want} arguments, got {nargs}"
    for index, value in constants.items():
        expected = spec.kind(index)
        got = _kind_of(value)
        if expected == ANY or got == "null" or got == expected:
            continue
        return f"argument {index + 1} of {spec.name} must be a {expected}, got {got} [{es_string(value)}]"
    return None


def call(name: str, args: list[Any], case_insensitive: bool = False) -> Any:
    """Evaluate ``name(args)`` directly (used for constant folding and tests)."""
    spec = lookup(name)
    if spec is None:
        raise KeyError(f"unknown function {name}")
    problem = check_literal_args(spec, len(args), case_insensitive, dict(enumerate(args)))
    if problem:
        raise ValueError(problem)
    return spec.impl(case_insensitive, *args)
