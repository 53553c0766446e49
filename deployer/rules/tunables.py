"""Analytic tunables: one YAML file of lists and time windows that rule queries are rendered from.

ATT&CK analytics name their tunable elements (TimeWindow, HighRiskParents, UserPaths, ...). A rule
marks the literal that holds one with an EQL comment right before it::

    sequence with maxspan=/* tunable: AN1314.TimeWindow.open_to_spawn */ 5m
      [file where process.name in~ /* tunable: AN1314.HighRiskParents */ ("winword.exe", "excel.exe")]

The query in the rule file stays complete, valid EQL (what Kibana receives and what every other
check reads); the tunables file is the one place to change a value. ``render`` rewrites each marked
literal from the file, and ``dac validate`` reports a literal that differs from it.

File shape: analytic → element → value, where a value is a list of strings (an EQL string list), a
duration (``5m``), or a mapping of named sub-values (``TimeWindow: {open_to_spawn: 5m}``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deployer.rules import attack

MARKER = re.compile(r"/\*\s*tunable:\s*([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)+)\s*\*/[ \t]*")
_DURATION = re.compile(r"[0-9]+(?:ms|s|m|h|d)")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
WIDTH = 110  # rendered string lists wrap before this column


class TunablesError(ValueError):
    """The tunables file is missing or malformed; ``str()`` names file:line."""


@dataclass(frozen=True)
class Tunable:
    """One tunable: a list of strings or a duration, and the line that defines it."""

    name: str
    value: tuple[str, ...] | str
    line: int

    @property
    def is_duration(self) -> bool:
        """A time window (``5m``) rather than a list."""
        return isinstance(self.value, str)


@dataclass(frozen=True)
class Occurrence:
    """A marked literal in a query: offsets of the literal (after the marker) and its values."""

    name: str
    marker_start: int
    start: int
    end: int
    value: tuple[str, ...] | str | None  # None: the marker is not followed by a list or duration


class _Loader(yaml.SafeLoader):
    """Keeps line numbers of mapping keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in out:
            raise TunablesError(f"{loader.name}:{key_node.start_mark.line + 1}: '{key}' is defined twice")
        out[key] = (loader.construct_object(value_node, deep=True), key_node.start_mark.line + 1)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_tunables(path: Path) -> dict[str, Tunable]:
    """Read and check the tunables file; raises TunablesError naming file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TunablesError(f"{path}: cannot read the tunables file: {exc}") from exc
    loader = _Loader(text)
    loader.name = str(path)
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TunablesError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    finally:
        loader.dispose()
    if not isinstance(doc, dict) or not doc:
        raise TunablesError(f"{path}:1: expected a mapping of analytics to their tunables")
    out: dict[str, Tunable] = {}
    try:
        walked = list(_walk(doc, ()))
    except TunablesError as exc:
        raise TunablesError(f"{path}:{exc}") from exc
    analytics = attack.table().analytics
    for name, value, line in walked:
        dotted = ".".join(name)
        where = f"{path}:{line}: {dotted}"
        if len(name) < 2:
            raise TunablesError(f"{where}: an analytic maps element names to values")
        if name[0] not in analytics:
            raise TunablesError(
                f"{where}: {name[0]} is not an ATT&CK analytic (top-level keys are analytic IDs)"
            )
        if isinstance(value, str):
            if not _DURATION.fullmatch(value):
                raise TunablesError(
                    f"{where}: expected a duration like 30s, 5m or 1h, or a list, got {value!r}"
                )
            out[dotted] = Tunable(dotted, value, line)
        elif isinstance(value, list):
            if not value or not all(isinstance(v, str) and v for v in value):
                raise TunablesError(f"{where}: a list tunable is a non-empty list of non-empty strings")
            dupes = sorted({v for v in value if value.count(v) > 1})
            if dupes:
                raise TunablesError(f"{where}: listed twice: {', '.join(dupes)}")
            out[dotted] = Tunable(dotted, tuple(value), line)
        else:
            raise TunablesError(
                f"{where}: expected a list of strings or a duration, got {type(value).__name__}"
            )
    return out


def is_attack_element(name: str) -> bool:
    """Whether ``name`` (AN….Element[.sub]) is one of the analytic's own ATT&CK tunable elements."""
    parts = name.split(".")
    analytic = attack.table().analytics.get(parts[0])
    return analytic is not None and len(parts) > 1 and parts[1] in analytic.mutable


def _walk(node: dict[Any, Any], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any, int]]:
    for key, (value, line) in node.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            raise TunablesError(f"{line}: tunable names are identifiers, got {key!r}")
        if isinstance(value, dict):
            if not value:
                raise TunablesError(f"{line}: {'.'.join((*prefix, key))} is empty")
            yield from _walk(value, (*prefix, key))
        else:
            yield (*prefix, key), value, line


def find(query: str) -> list[Occurrence]:
    """Every marked literal in ``query``, in order."""
    out = []
    for match in MARKER.finditer(query):
        start = match.end()
        value: tuple[str, ...] | str | None = None
        end = start
        duration = _DURATION.match(query, start)
        if duration:
            value, end = duration.group(0), duration.end()
        elif query.startswith("(", start):
            parsed = _string_list(query, start)
            if parsed is not None:
                value, end = parsed
        out.append(Occurrence(match.group(1), match.start(), start, end, value))
    return out


def _string_list(text: str, start: int) -> tuple[tuple[str, ...], int] | None:
    """Parse ``("a", "b")`` at ``start``; None unless it is a list of plain double-quoted strings."""
    i, values, expect_value = start + 1, [], True
    while i < len(text):
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == ")" and not expect_value or ch == ")" and not values:
            return tuple(values), i + 1
        elif ch == "," and not expect_value:
            expect_value, i = True, i + 1
        elif ch == '"' and expect_value and not text.startswith('"""', i):
            j, chars = i + 1, []
            while j < len(text) and text[j] != '"':
                if text[j] == "\\" and j + 1 < len(text):
                    chars.append({"n": "\n", "t": "\t", "r": "\r"}.get(text[j + 1], text[j + 1]))
                    j += 2
                else:
                    chars.append(text[j])
                    j += 1
            if j >= len(text):
                return None
            values.append("".join(chars))
            expect_value, i = False, j + 1
        else:
            return None
    return None


def literal(tunable: Tunable, column: int) -> str:
    """EQL text for ``tunable``; a list that does not fit wraps, continuation lines indented under ``column``."""
    if isinstance(tunable.value, str):
        return tunable.value
    items = ['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in tunable.value]
    one_line = "(" + ", ".join(items) + ")"
    if column + len(one_line) <= WIDTH:
        return one_line
    indent = " " * (column + 2)
    lines, current = [], ""
    for item in items:
        candidate = f"{current}, {item}" if current else item
        if current and len(indent) + len(candidate) + 1 > WIDTH:
            lines.append(current + ",")
            current = item
        else:
            current = candidate
    lines.append(current)
    return "(\n" + "\n".join(indent + line for line in lines) + "\n" + " " * column + ")"


def render(query: str, tunables: dict[str, Tunable]) -> str:
    """``query`` with every marked literal rewritten from ``tunables`` (unknown names left alone)."""
    out, last = [], 0
    for occ in find(query):
        tunable = tunables.get(occ.name)
        if tunable is None or occ.value is None:
            continue
        line_start = query.rfind("\n", 0, occ.marker_start) + 1
        column = len(query[line_start : occ.marker_start]) - len(
            query[line_start : occ.marker_start].lstrip()
        )
        out.append(query[last : occ.start])
        out.append(literal(tunable, column))
        last = occ.end
    out.append(query[last:])
    return "".join(out)


def problems(query: str, tunables: dict[str, Tunable]) -> Iterator[tuple[Occurrence, str, str]]:
    """(occurrence, message, hint) for each marker that is unknown, malformed or out of date."""
    for occ in find(query):
        tunable = tunables.get(occ.name)
        if tunable is None:
            yield (
                occ,
                f"tunable '{occ.name}' is not defined in the tunables file",
                "define it there or fix the name",
            )
        elif occ.value is None:
            yield (
                occ,
                f"tunable '{occ.name}' marks no literal: expected a list of strings or a duration after the marker",
                "put the marker right before the (...) list or the maxspan value",
            )
        elif tunable.is_duration != isinstance(occ.value, str):
            kind = "a duration" if tunable.is_duration else "a list"
            yield (
                occ,
                f"tunable '{occ.name}' is {kind} in the tunables file",
                "mark a literal of the same kind",
            )
        elif occ.value != tunable.value:
            yield (
                occ,
                f"the literal after tunable '{occ.name}' differs from the tunables file (line {tunable.line})",
                "run `dac tunables --write` to render the queries from the tunables file",
            )


def render_file(source: str, query: str, query_position: Any, tunables: dict[str, Tunable]) -> str | None:
    """The rule file ``source`` with its query's marked literals rendered; None when nothing changes.

    ``query_position(line, column)`` maps a 1-based position in the query to one in the file (the
    rule loader's ``RuleFile.query_position``); the query must be a block scalar (``query: |``).
    """
    rendered = render(query, tunables)
    if rendered == query:
        return None
    lines = source.split("\n")

    def offset(query_offset: int) -> int:
        line = query.count("\n", 0, query_offset) + 1
        column = query_offset - (query.rfind("\n", 0, query_offset) + 1) + 1
        file_line, file_column = query_position(line, column)
        return sum(len(x) + 1 for x in lines[: file_line - 1]) + file_column - 1

    first_line, first_column = query_position(1, 1)
    indent = " " * (first_column - 1)
    out = source
    for occ in reversed(find(query)):
        tunable = tunables.get(occ.name)
        if tunable is None or occ.value is None or occ.value == tunable.value:
            continue
        line_start = query.rfind("\n", 0, occ.marker_start) + 1
        column = len(query[line_start : occ.marker_start]) - len(
            query[line_start : occ.marker_start].lstrip()
        )
        text = literal(tunable, column).replace("\n", "\n" + indent)
        start, end = offset(occ.start), offset(occ.end - 1) + 1
        out = out[:start] + text + out[end:]
    return out
