"""Load rule files: YAML with a line/column for every node, and positions inside scalars.

Every problem found while reading a file (size, encoding, YAML syntax, shape) becomes a
``Finding``; nothing here raises for bad content, so one run reports every broken file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from deployer.rules.findings import ERROR, Finding

try:  # libyaml is several times faster and yields the same nodes and marks
    _BaseLoader: type = yaml.CSafeLoader  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - pure-Python fallback
    _BaseLoader = yaml.SafeLoader

# Rule files are a few kilobytes; Kibana's whole import payload is 10 MiB. Anything above this
# is not a hand-written rule, and refusing it before parsing keeps validation fast.
MAX_FILE_BYTES = 1024 * 1024
# Nodes after alias expansion; bounds the work of schema validation against "billion laughs".
MAX_NODES = 50_000
RULE_SUFFIXES = (".yaml", ".yml")
# Exception list files live in directories of this name, beside the rules that use them.
EXCEPTIONS_DIR = "exceptions"
# Directories below a rule directory that never hold rule files.
SKIP_DIRS = frozenset({"fixtures", EXCEPTIONS_DIR})

JsonPath = tuple[str | int, ...]
Position = tuple[int, int]

# PyYAML counts all of these as line breaks; splitting the same way keeps marks and lines aligned.
_STR_TAG = "tag:yaml.org,2002:str"
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_BLOCK_HEADER = re.compile(r"([|>])(?:([1-9])([+-])?|([+-])([1-9])?)?")


# Per node: (key line, key col, value line, value col, parent indent, scalar span or None), all
# 1-based except the indent. Plain tuples of atoms, not node objects: CPython's garbage collector
# stops tracking such tuples, so holding positions for thousands of rules costs no GC time.
_NodePos = tuple[int, int, int, int, int, "tuple[str | None, str, int, int, int, int] | None"]


@dataclass
class RuleFile:
    """One loaded rule file: its data, and where every node of it is written."""

    path: Path
    data: dict[str, Any]
    source: str = field(repr=False)
    _positions: dict[JsonPath, _NodePos] = field(default_factory=dict, repr=False)
    _offsets_cache: dict[JsonPath, list[Position] | None] = field(default_factory=dict, repr=False)

    @property
    def kibana(self) -> dict[str, Any]:
        """The Kibana rule fields (everything but the project-only ``metadata`` block)."""
        return {k: v for k, v in self.data.items() if k != "metadata"}

    @property
    def metadata(self) -> dict[str, Any]:
        """The project-only ``metadata`` block ({} when absent or not a mapping)."""
        meta = self.data.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def rule_id(self) -> str | None:
        """The rule's ``rule_id`` when it is a string, else None."""
        rid = self.data.get("rule_id")
        return rid if isinstance(rid, str) else None

    @property
    def name(self) -> str | None:
        """The rule's ``name`` when it is a string, else None."""
        name = self.data.get("name")
        return name if isinstance(name, str) else None

    @property
    def query(self) -> str | None:
        """The rule's ``query`` when it is a string, else None."""
        query = self.data.get("query")
        return query if isinstance(query, str) else None

    def has(self, json_path: JsonPath | str | Sequence[str | int]) -> bool:
        """True when the file holds a node at ``json_path``."""
        return _parse_path(json_path) in self._positions

    def position(self, json_path: JsonPath | str | Sequence[str | int] = ()) -> Position:
        """1-based (line, column) of the node at ``json_path``: its key for mapping entries.

        ``json_path`` is a tuple of keys and indices, ``"threat[0].tactic.id"`` or
        ``"/threat/0/tactic/id"``. A path that does not exist resolves to its nearest
        existing ancestor, so a "missing property" error points at the enclosing mapping.
        """
        pos = self._lookup(_parse_path(json_path))
        return (pos[0], pos[1]) if pos[0] else (pos[2], pos[3])

    def value_position(self, json_path: JsonPath | str | Sequence[str | int] = ()) -> Position:
        """1-based (line, column) where the value at ``json_path`` starts."""
        pos = self._lookup(_parse_path(json_path))
        return pos[2], pos[3]

    def scalar_position(
        self, json_path: JsonPath | str | Sequence[str | int], line: int, column: int
    ) -> Position:
        """Map a 1-based (line, column) inside the string at ``json_path`` to the file.

        Handles plain, quoted and block (``|``, ``|-``, ``>``, ...) scalars; when the exact
        layout cannot be reconstructed it falls back to where the value starts.
        """
        path = self._nearest(_parse_path(json_path))
        pos = self._positions[path]
        span = pos[5]
        if span is None:
            return pos[2], pos[3]
        if path not in self._offsets_cache:
            self._offsets_cache[path] = _scalar_offsets(self._lines(), span, pos[4])
        offsets = self._offsets_cache[path]
        if offsets is None:
            return pos[2], pos[3]
        offset = _text_offset(span[1], line, column)
        l0, c0 = offsets[min(offset, len(offsets) - 1)]
        return l0 + 1, c0 + 1

    def query_position(self, line: int, column: int) -> Position:
        """Map a 1-based (line, column) in the EQL query text to the file."""
        return self.scalar_position(("query",), line, column)

    def _lookup(self, path: JsonPath) -> _NodePos:  # type: ignore[valid-type]
        return self._positions[self._nearest(path)]

    def _nearest(self, path: JsonPath) -> JsonPath:
        """``path`` if the file holds a node there, else its nearest existing ancestor."""
        while path not in self._positions and path:
            path = path[:-1]
        return path

    def _lines(self) -> list[str]:
        return _LINE_BREAK.split(self.source)


@dataclass
class LoadResult:
    """Rules that loaded, and findings for the files that did not."""

    rules: list[RuleFile]
    findings: list[Finding]


def discover_rule_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and directories into rule files (``*.yaml``/``*.yml``; fixtures skipped).

    Raises FileNotFoundError for a path that does not exist.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        candidates: Iterable[Path]
        if path.is_dir():
            candidates = sorted(_walk_dir(path))
        elif path.parent.name == EXCEPTIONS_DIR and path.suffix in RULE_SUFFIXES:
            candidates = []  # an exception list file, not a rule (deployer.exceptions loads it)
        else:
            candidates = [path]  # an explicitly named file is loaded whatever its suffix
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                out.append(candidate)
    return out


def _walk_dir(root: Path) -> Iterator[Path]:
    for child in root.iterdir():
        if child.is_dir():
            if child.name in SKIP_DIRS or child.name.startswith("."):
                continue
            yield from _walk_dir(child)
        elif child.suffix in RULE_SUFFIXES and not child.name.startswith("."):
            yield child


def load_rule_files(paths: Iterable[str | Path]) -> LoadResult:
    """Load every rule file under ``paths``; unreadable files become findings, not exceptions."""
    rules: list[RuleFile] = []
    findings: list[Finding] = []
    for path in discover_rule_files(paths):
        rule, problems = load_rule_file(path)
        findings.extend(problems)
        if rule is not None:
            rules.append(rule)
    return LoadResult(rules, findings)


def load_rule_file(
    path: str | Path, max_bytes: int = MAX_FILE_BYTES
) -> tuple[RuleFile | None, list[Finding]]:
    """Load one rule file (or another YAML file of the repo); returns it (None when unusable) and its problems."""
    path = Path(path)
    display = str(path)
    try:
        if not path.is_file():
            return None, [_finding(display, 1, 1, "io", "not a regular file")]
        with path.open("rb") as handle:
            # Read at most one byte past the limit: the size on disk may be unknown or change.
            raw = handle.read(max_bytes + 1)
            size = path.stat().st_size
    except OSError as exc:
        return None, [_finding(display, 1, 1, "io", f"cannot read file: {exc.strerror or exc}")]
    if len(raw) > max_bytes:
        return None, [
            _finding(
                display,
                1,
                1,
                "file-size",
                f"file is {max(size, len(raw)) / 1024 / 1024:.1f} MiB; rule files are limited to "
                f"{max_bytes // 1024} KiB",
                "a rule file holds one rule; move event data into fixtures/*.ndjson",
            )
        ]
    return load_rule_text(raw, path)


def load_rule_text(raw: bytes | str, path: str | Path = "<string>") -> tuple[RuleFile | None, list[Finding]]:
    """Load a rule from bytes or text (``path`` is used for positions and messages)."""
    path = Path(path)
    display = str(path)
    if isinstance(raw, bytes):
        text, problem = _decode(raw, display)
        if problem is not None:
            return None, [problem]
        assert text is not None
    else:
        text = raw
    findings: list[Finding] = []
    try:
        loader = _BaseLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or str(exc)
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        hint = _yaml_hint(problem)
        if exc.context and "single document" in exc.context:
            problem, context = "the file holds more than one YAML document", ""
            hint = "one rule per file: remove the '---' and move the second rule to its own file"
        return None, [_finding(display, line, col, "yaml", f"invalid YAML: {problem}{context}", hint)]
    except yaml.YAMLError as exc:
        # ReaderError (control characters) carries a character offset rather than a mark.
        line, col = _offset_to_position(text, getattr(exc, "position", 0) or 0)
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        return None, [_finding(display, line, col, "yaml", f"invalid YAML: {reason}")]
    except RecursionError:
        return None, [_finding(display, 1, 1, "yaml", "invalid YAML: nesting is too deep")]

    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null") and not root.value):
        return None, [
            _finding(
                display,
                1,
                1,
                "yaml",
                "file is empty; a rule file holds one YAML mapping",
                "start from an existing rule under detections/",
            )
        ]
    if not isinstance(root, yaml.MappingNode):
        kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        line, col = root.start_mark.line + 1, root.start_mark.column + 1
        return None, [
            _finding(
                display,
                line,
                col,
                "yaml",
                f"top level is {kind}; a rule file holds one mapping (rule_id: ..., name: ...)",
                "one rule per file: split a list of rules into separate files",
            )
        ]
    builder = _Builder(display, loader)
    try:
        data = builder.build(root, (), None, 0)
    except RecursionError:
        return None, [_finding(display, 1, 1, "yaml", "invalid YAML: nesting is too deep")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        return None, [_finding(display, line, col, "yaml", f"invalid YAML: {getattr(exc, 'problem', exc)}")]
    if builder.saw_alias:
        # Only documents with aliases can expand beyond their size on disk.
        size = _expanded_size(root)
        if size is None:
            return None, [_finding(display, 1, 1, "yaml", "invalid YAML: an alias refers to itself")]
        if size > MAX_NODES:
            return None, [
                _finding(
                    display,
                    1,
                    1,
                    "yaml",
                    f"document expands to more than {MAX_NODES} nodes (aliases); not a rule file",
                )
            ]
    findings.extend(builder.findings)
    rule = RuleFile(path=path, data=data, source=text, _positions=builder.positions)
    if isinstance(data.get("rule_id"), str):
        findings = [replace(f, rule_id=data["rule_id"]) for f in findings]
    return rule, findings


def _decode(raw: bytes, display: str) -> tuple[str | None, Finding | None]:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None, _finding(
            display, 1, 1, "encoding", "file is UTF-16; rule files must be UTF-8", "re-save the file as UTF-8"
        )
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        start = exc.start
        prefix = raw[:start]
        line = prefix.count(b"\n") + 1
        col = len(prefix[prefix.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        byte = raw[start : start + 1].hex()
        return None, _finding(
            display,
            line,
            col,
            "encoding",
            f"file is not valid UTF-8 (byte 0x{byte} at offset {start})",
            "re-save the file as UTF-8",
        )


def _yaml_hint(problem: str) -> str | None:
    if "found character '\\t'" in problem or "tab" in problem:
        return "indent with spaces, not tabs"
    if "mapping values are not allowed" in problem:
        return "quote values that contain ': ' or indent the nested mapping"
    if "expected a single document" in problem:
        return "one rule per file: remove the extra '---' document"
    if "could not determine a constructor" in problem:
        return "custom YAML tags are not allowed in rule files"
    return None


def _offset_to_position(text: str, offset: int) -> Position:
    before = text[:offset]
    lines = _LINE_BREAK.split(before)
    return len(lines), len(lines[-1]) + 1


def _expanded_size(root: yaml.Node) -> int | None:
    """Node count with aliases expanded (memoised), or None for a recursive alias."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int | None:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            return None
        if isinstance(node, yaml.ScalarNode):
            return 1
        active.add(key)
        total = 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                children.extend((k, v))
        for child in children:
            sub = size(child)
            if sub is None:
                return None
            total += sub
            if total > MAX_NODES:
                break  # the caller only needs to know the limit is exceeded
        active.discard(key)
        memo[key] = total
        return total

    try:
        return size(root)
    except RecursionError:
        return MAX_NODES + 1


class _Builder:
    """Turn a composed node tree into Python data, recording the position of every node."""

    def __init__(self, display: str, loader: Any) -> None:
        self.display = display
        self.loader = loader
        self.positions: dict[JsonPath, _NodePos] = {}
        self.findings: list[Finding] = []
        self._built: dict[int, Any] = {}
        self.saw_alias = False

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        # Strings are most scalars in a rule and need no conversion; the constructor is only
        # worth its cost for ints, floats, booleans, nulls and timestamps.
        if node.tag == _STR_TAG:
            return node.value
        return self.loader.construct_object(node)

    def build(self, node: yaml.Node, path: JsonPath, key: Position | None, indent: int) -> Any:
        if path not in self.positions:
            start = node.start_mark
            span = None
            if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
                end = node.end_mark
                span = (node.style, node.value, start.line, start.column, end.line, end.column)
            key_line, key_col = key if key is not None else (0, 0)
            self.positions[path] = (key_line, key_col, start.line + 1, start.column + 1, indent, span)
        cached = self._built.get(id(node))
        if cached is not None:
            self.saw_alias = True
            return cached  # an alias: share the object like PyYAML does; positions stay at the anchor
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if isinstance(node, yaml.SequenceNode):
            seq: list[Any] = []
            self._built[id(node)] = seq
            for index, item in enumerate(node.value):
                seq.append(self.build(item, (*path, index), None, item.start_mark.column))
            return seq
        assert isinstance(node, yaml.MappingNode)
        mapping: dict[Any, Any] = {}
        self._built[id(node)] = mapping
        has_merge = any(k.tag == "tag:yaml.org,2002:merge" for k, _ in node.value)
        if has_merge:
            # Merged keys legitimately repeat own keys; resolve them PyYAML's way first.
            self.loader.flatten_mapping(node)
        first_seen: dict[Any, Position] = {}
        for key_node, value_node in node.value:
            key_pos = _mark(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                self.findings.append(
                    _finding(self.display, *key_pos, "yaml", "mapping keys must be plain strings")
                )
                continue
            key_value = self._scalar(key_node)
            if not isinstance(key_value, str):
                # `yes:`/`1:` keys become bool/int in YAML; the rule format only has string keys.
                self.findings.append(
                    _finding(
                        self.display,
                        *key_pos,
                        "yaml",
                        f"mapping key {key_node.value!r} is read as {type(key_value).__name__}; "
                        "keys must be strings",
                        f"quote it: '{key_node.value}'",
                    )
                )
                key_value = str(key_node.value)
            if key_value in first_seen and not has_merge:
                first = first_seen[key_value]
                self.findings.append(
                    _finding(
                        self.display,
                        *key_pos,
                        "yaml",
                        f"duplicate key '{key_value}' (first at line {first[0]}); "
                        "YAML keeps only the last one",
                        "remove one of them",
                    )
                )
            first_seen.setdefault(key_value, key_pos)
            child_path = (*path, key_value)
            if has_merge:
                # Later (own) keys override merged ones: record the winner's position.
                self.positions.pop(child_path, None)
            mapping[key_value] = self.build(value_node, child_path, key_pos, key_node.start_mark.column)
        return mapping


def _mark(mark: Any) -> Position:
    return mark.line + 1, mark.column + 1


def _finding(path: str, line: int, col: int, code: str, message: str, hint: str | None = None) -> Finding:
    return Finding(path, line, col, None, code, ERROR, message, hint)


# ---------------------------------------------------------------- paths


_PATH_TOKEN = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def _parse_path(json_path: JsonPath | str | Sequence[str | int]) -> JsonPath:
    if isinstance(json_path, tuple):
        return json_path
    if not isinstance(json_path, str):
        return tuple(json_path)
    text = json_path.strip()
    if text.startswith("/"):
        parts = [p.replace("~1", "/").replace("~0", "~") for p in text[1:].split("/") if p != ""]
        return tuple(int(p) if p.isdigit() else p for p in parts)
    if text.startswith("$"):
        text = text[1:]
    out: list[str | int] = []
    for index, name in _PATH_TOKEN.findall(text):
        if index:
            out.append(int(index))
        elif name:
            out.append(int(name) if name.isdigit() else name)
    return tuple(out)


# ---------------------------------------------------------------- positions inside scalars


def _text_offset(value: str, line: int, column: int) -> int:
    """Character offset of 1-based (line, column) in ``value``."""
    lines = value.split("\n")
    line = max(1, min(line, len(lines)))
    offset = sum(len(text) + 1 for text in lines[: line - 1])
    return offset + max(0, min(column - 1, len(lines[line - 1])))


def _scalar_offsets(lines: list[str], span: tuple[Any, ...], parent_indent: int) -> list[Position] | None:
    """0-based source (line, column) of each character of the scalar plus one past the end.

    ``span`` is (style, value, start line, start column, end line, end column), 0-based.
    Rebuilds the scalar from the raw lines and accepts the result only if it reproduces the
    value PyYAML produced, so a layout this code does not understand degrades to "start of
    value" instead of a wrong position.
    """
    style, value = span[0], span[1]
    try:
        if style in ("|", ">"):
            text, offsets = _block_scalar(lines, span, parent_indent)
        elif style in (None, ""):
            text, offsets = _flow_scalar(lines, span, quote=0)
        else:
            text, offsets = _flow_scalar(lines, span, quote=1)
    except (IndexError, ValueError):
        return None
    if text.startswith(value) and len(offsets) > len(value):
        return offsets[: len(value) + 1]
    return None


def _block_scalar(lines: list[str], span: tuple[Any, ...], parent_indent: int) -> tuple[str, list[Position]]:
    header_line = span[2]
    header = lines[header_line][span[3] :]
    match = _BLOCK_HEADER.match(header)
    if match is None:
        raise ValueError("not a block scalar header")
    explicit = match.group(2) or match.group(5)
    body_start = header_line + 1
    if explicit:
        indent = parent_indent + int(explicit)
    else:
        indent = 0
        for raw in lines[body_start:]:
            if raw.strip(" ") != "":
                indent = len(raw) - len(raw.lstrip(" "))
                break
    body: list[tuple[int, str]] = []  # (source line, text after the indentation)
    for number in range(body_start, len(lines)):
        raw = lines[number]
        if raw.strip(" ") == "":
            body.append((number, raw[indent:]))
            continue
        if len(raw) - len(raw.lstrip(" ")) < indent:
            break
        body.append((number, raw[indent:]))
    chars: list[str] = []
    offsets: list[Position] = []
    if span[0] == "|":
        for number, content in body:
            for i, ch in enumerate(content):
                chars.append(ch)
                offsets.append((number, indent + i))
            chars.append("\n")
            offsets.append((number, indent + len(content)))
    else:
        _fold(body, indent, chars, offsets)
    offsets.append(offsets[-1] if offsets else (body_start, indent))
    return "".join(chars), offsets


def _fold(body: list[tuple[int, str]], indent: int, chars: list[str], offsets: list[Position]) -> None:
    """Folded (``>``) scalar: single breaks between normal lines become spaces."""
    prev_kind: str | None = None  # "normal" or "more" (more-indented) for the last non-empty line
    pending: list[Position] = []  # line ends seen since the last non-empty line
    for number, content in body:
        if content.strip(" ") == "":
            pending.append((number, indent + len(content)))
            continue
        kind = "more" if content.startswith((" ", "\t")) else "normal"
        if prev_kind is None:
            for pos in pending:  # leading empty lines are kept as newlines
                chars.append("\n")
                offsets.append(pos)
        elif prev_kind == "normal" and kind == "normal":
            if len(pending) == 1:
                chars.append(" ")
                offsets.append(pending[0])
            else:
                for pos in pending[1:]:
                    chars.append("\n")
                    offsets.append(pos)
        else:
            for pos in pending:
                chars.append("\n")
                offsets.append(pos)
        for i, ch in enumerate(content):
            chars.append(ch)
            offsets.append((number, indent + i))
        pending = [(number, indent + len(content))]
        prev_kind = kind
    for pos in pending:
        chars.append("\n")
        offsets.append(pos)


def _flow_scalar(lines: list[str], span: tuple[Any, ...], quote: int) -> tuple[str, list[Position]]:
    """Plain or quoted scalar: lines trimmed and folded; escapes make the check fail (fallback)."""
    start_line, start_col, end_line, end_col = span[2], span[3], span[4], span[5]
    segments: list[tuple[int, int, str]] = []  # (line, start column, text)
    for number in range(start_line, end_line + 1):
        raw = lines[number]
        lo = start_col + quote if number == start_line else 0
        hi = end_col - quote if number == end_line else len(raw)
        piece = raw[lo:hi]
        stripped_left = piece.lstrip(" \t") if number != start_line else piece
        lo += len(piece) - len(stripped_left)
        text = stripped_left.rstrip(" \t") if number != end_line else stripped_left
        segments.append((number, lo, text))
    chars: list[str] = []
    offsets: list[Position] = []
    empties = 0
    for i, (number, lo, text) in enumerate(segments):
        if i > 0 and text == "" and i != len(segments) - 1:
            empties += 1
            continue
        if i > 0:
            prev_line = segments[i - 1][0]
            if empties:
                for _ in range(empties):
                    chars.append("\n")
                    offsets.append((prev_line, 0))
            else:
                chars.append(" ")
                offsets.append((prev_line, len(lines[prev_line])))
            empties = 0
        for j, ch in enumerate(text):
            chars.append(ch)
            offsets.append((number, lo + j))
    offsets.append((end_line, max(0, end_col - quote)))
    return "".join(chars), offsets
