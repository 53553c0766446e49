"""Find and load exception list and value list files (YAML, positions kept for findings).

Exception lists live in directories named ``exceptions`` inside the rule directories (the rule
discovery skips them). A file holding ``values`` is a value list; any other file is an exception
list. Loading never raises for bad content: problems become findings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

from deployer.exceptions.model import Catalogue, ExceptionList, ValueList
from deployer.rules.findings import ERROR, Finding
from deployer.rules.loader import EXCEPTIONS_DIR, RULE_SUFFIXES, RuleFile, load_rule_file

DEFAULT_RULES_DIR = Path("detections")
# A list of 10,000 items (Kibana's maximum) with long wildcard paths is a few MiB of YAML.
MAX_LIST_FILE_BYTES = 16 * 1024 * 1024


def discover_exception_files(paths: Iterable[str | Path]) -> list[Path]:
    """Exception list files under ``paths``: files in ``exceptions/`` dirs, or named directly."""
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates: Iterable[Path] = sorted(_walk(path, inside=path.name == EXCEPTIONS_DIR))
        elif path.parent.name == EXCEPTIONS_DIR and path.suffix in RULE_SUFFIXES:
            candidates = [path]
        else:
            candidates = []
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                out.append(candidate)
    return out


def _walk(root: Path, *, inside: bool) -> Iterator[Path]:
    for child in root.iterdir():
        if child.name.startswith(".") or child.name == "fixtures":
            continue
        if child.is_dir():
            yield from _walk(child, inside=inside or child.name == EXCEPTIONS_DIR)
        elif inside and child.suffix in RULE_SUFFIXES:
            yield child


def load_catalogue(paths: Iterable[str | Path]) -> tuple[Catalogue, list[Finding]]:
    """Load every exception and value list file under ``paths``; duplicates of an id are findings."""
    catalogue = Catalogue()
    findings: list[Finding] = []
    for path in discover_exception_files(paths):
        file, problems = load_rule_file(path, max_bytes=MAX_LIST_FILE_BYTES)
        findings.extend(problems)
        if file is None:
            continue
        if "values" in file.data and "items" not in file.data:
            vl = ValueList(file)
            catalogue.files.append(vl)
            first = catalogue.value_lists.get(vl.id) if vl.id else None
            if first is not None:
                findings.append(_duplicate(file, "id", vl.id, first.file.path, "value list"))
            elif vl.id:
                catalogue.value_lists[vl.id] = vl
            continue
        _timestamps_as_text(file.data)
        lst = ExceptionList(file)
        catalogue.files.append(lst)
        first_list = catalogue.lists.get(lst.list_id) if lst.list_id else None
        if first_list is not None:
            findings.append(_duplicate(file, "list_id", lst.list_id, first_list.path, "exception list"))
        elif lst.list_id:
            catalogue.lists[lst.list_id] = lst
    return catalogue, findings


def catalogue_for(
    paths: Iterable[str | Path], referenced: Iterable[str], default_dir: Path = DEFAULT_RULES_DIR
) -> tuple[Catalogue, list[Finding]]:
    """The lists under ``paths``, plus ``default_dir``'s (``detections/``) when a reference is unresolved.

    A rule tested or validated on its own still needs the lists it references; they live with the
    rest of the content. Problems in those extra files are reported by the runs that cover them.
    """
    paths = list(paths)
    catalogue, findings = load_catalogue(paths)
    missing = set(referenced) - set(catalogue.lists)
    if (
        missing
        and default_dir.is_dir()
        and not any(Path(p).resolve() == default_dir.resolve() for p in paths)
    ):
        extra, _ = load_catalogue([default_dir])
        catalogue.add(extra)
    return catalogue, findings


def _timestamps_as_text(data: dict) -> None:
    """YAML reads an unquoted ``expire_time`` as a timestamp; Kibana's field is an ISO 8601 string."""
    items = data.get("items")
    for item in items if isinstance(items, list) else []:
        value = item.get("expire_time") if isinstance(item, dict) else None
        if isinstance(value, datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=UTC)
            item["expire_time"] = aware.isoformat().replace("+00:00", "Z")
        elif isinstance(value, date):
            item["expire_time"] = f"{value.isoformat()}T00:00:00Z"


def _duplicate(file: RuleFile, key: str, value: str | None, first: Path, what: str) -> Finding:
    line, col = file.position((key,))
    return Finding(
        str(file.path),
        line,
        col,
        None,
        "exceptions-duplicate-list",
        ERROR,
        f"{what} {key} {value!r} is already declared in {first}",
        f"give this {what} another {key}, or merge the two files",
    )


def catalogue_near(rule_paths: Iterable[str | Path]) -> Catalogue:
    """The lists in the ``exceptions/`` directories beside each rule file or in its parent directories.

    For callers that hold loaded rules but no catalogue (``dac verify``, ``dac demo``): a rule's
    lists are the ones its repository keeps next to it. Load problems are left to ``dac validate``.
    """
    dirs: list[Path] = []
    for raw in rule_paths:
        for parent in Path(raw).resolve().parents:
            candidate = parent / EXCEPTIONS_DIR
            if candidate.is_dir() and candidate not in dirs:
                dirs.append(candidate)
            if (parent / ".git").exists():
                break
    catalogue, _ = load_catalogue(dirs)
    return catalogue
