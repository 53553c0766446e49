"""Run Elasticsearch's EQL conformance suites against the offline evaluator.

Usage: ``python -m deployer.eql.conformance DIR [--verbose] [--keyword-type keyword|wildcard]``

DIR holds the suites copied from Elasticsearch (test_queries.toml, additional_test_queries.toml,
test_queries_date.toml, test_extra.toml, test_missing_events.toml), their data (test_data.json,
data/*.data) and mappings (data/*.mapping), and optionally the sample suites in DIR/sample/
(test_sample.toml, test_sample_multi.toml, test_sampling.toml with sample/data/). The data is
loaded the way Elasticsearch's QA DataLoader indexes it; each active query runs and its event ids
(and join keys, when given) are compared with the expected ones. A sample suite entry may list
several acceptable id lists and sets the request's ``size`` and ``max_samples_per_key``. The
folder is read only when this command runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deployer.eql.engine import compile_query
from deployer.eql.errors import EqlUnsupportedError
from deployer.eql.values import es_string, parse_timestamp

__all__ = [
    "Dataset",
    "QueryResult",
    "SuiteResult",
    "load_dataset",
    "load_sample_dataset",
    "load_suite",
    "run_sample_suites",
    "run_suites",
    "main",
]

SUITES: dict[str, str] = {
    "test_queries.toml": "endgame-140",
    "additional_test_queries.toml": "endgame-140",
    "test_queries_date.toml": "endgame-140",
    "test_extra.toml": "extra",
    "test_missing_events.toml": "missing-events",
}
# Sample suites (under DIR/sample/) and the indices each one's single request searches, in order.
SAMPLE_SUITES: dict[str, tuple[str, ...]] = {
    "sample/test_sample.toml": ("sample1", "sample2", "sample3"),
    "sample/test_sample_multi.toml": ("sample-multi",),
    "sample/test_sampling.toml": ("sampling1", "sampling2", "sampling3"),
}
FILETIME_EPOCH_OFFSET_MS = 11644473600000
_KEYWORD_PLACEHOLDER = "[runtime_random_keyword_type]"


@dataclass
class Dataset:
    """Events of one index with the mapping-derived field types and the tiebreaker field."""

    name: str
    events: list[dict]
    field_types: dict[str, Any]
    tiebreaker: str


@dataclass
class QueryResult:
    """Outcome of one conformance query."""

    file: str
    name: str
    status: str  # passed | failed | unsupported
    detail: str = ""


@dataclass
class SuiteResult:
    """All query outcomes, with counts per file."""

    results: list[QueryResult] = field(default_factory=list)

    def count(self, status: str, file: str | None = None) -> int:
        """Number of results with ``status`` (in ``file`` when given)."""
        return sum(1 for r in self.results if r.status == status and (file is None or r.file == file))

    @property
    def total(self) -> int:
        """Number of queries run."""
        return len(self.results)


# ---------------------------------------------------------------- loading


def _strip_comment_lines(text: str, marker: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(marker))


def load_mapping(path: Path, keyword_type: str = "keyword") -> dict[str, Any]:
    """Read a QA ``.mapping`` file (``#`` comments, keyword-type placeholder) into field → property."""
    text = _strip_comment_lines(path.read_text(encoding="utf-8"), "#").replace(
        _KEYWORD_PLACEHOLDER, keyword_type
    )
    mapping = json.loads(text)
    out: dict[str, Any] = {}

    def walk(props: dict[str, Any], prefix: str) -> None:
        for name, spec in props.items():
            full = f"{prefix}{name}"
            if "properties" in spec:
                walk(spec["properties"], f"{full}.")
            else:
                out[full] = spec

    walk(mapping.get("properties", {}), "")
    return out


def load_data_file(path: Path) -> list[dict]:
    """Read a QA ``.data`` file: JSON with ``//`` comment lines."""
    return json.loads(_strip_comment_lines(path.read_text(encoding="utf-8"), "//"))


def _leaf_paths(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            _leaf_paths(value, f"{prefix}{key}.", out)
        return
    name = prefix[:-1]
    values = obj if isinstance(obj, list) else [obj]
    for v in values:
        if v is not None and not isinstance(v, dict | list):
            out.setdefault(name, v)
            return
    out.setdefault(name, None)


def _dynamic_types(events: list[dict], explicit: dict[str, Any]) -> dict[str, Any]:
    # Fields absent from the explicit mapping get Elasticsearch's dynamic mapping when the
    # documents are indexed: strings become text with a keyword sub-field (ignore_above 256),
    # integers long, decimals float, booleans boolean.
    seen: dict[str, Any] = {}
    for ev in events:
        _leaf_paths(ev, "", seen)
    types = dict(explicit)
    for name, sample in seen.items():
        if name in types:
            continue
        if isinstance(sample, bool):
            types[name] = "boolean"
        elif isinstance(sample, int):
            types[name] = "long"
        elif isinstance(sample, float):
            types[name] = "float"
        elif isinstance(sample, str):
            types[name] = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
        else:
            # Only nulls or empty arrays: Elasticsearch adds no mapping for the field.
            continue
    return types


def load_dataset(directory: Path, name: str, keyword_type: str = "keyword") -> Dataset:
    """Load one QA index (``endgame-140``, ``extra`` or ``missing-events``) as DataLoader does."""
    data_dir = directory / "data"
    if name == "endgame-140":
        events = json.loads((directory / "test_data.json").read_text(encoding="utf-8"))
        for ev in events:
            # `timestamp` is a Windows FILETIME (100 ns ticks since 1601); @timestamp is Unix ms.
            ev["@timestamp"] = ev["timestamp"] // 10000 - FILETIME_EPOCH_OFFSET_MS
        mapping = load_mapping(data_dir / "endgame-140.mapping", keyword_type)
        tiebreaker = "serial_event_id"
    else:
        events = load_data_file(data_dir / f"{name}.data")
        mapping = load_mapping(data_dir / f"{name}.mapping", keyword_type)
        tiebreaker = "sequence"
    return Dataset(name, events, _dynamic_types(events, mapping), tiebreaker)


# Java date-format letters the QA mappings use, as strptime directives.
_JAVA_DATE_TOKENS = (("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S"))


def _date_parser(java_format: str):
    """Parse a value of a ``date`` field with a mapping ``format`` (``a||b``) into epoch ms."""
    formats = []
    for part in java_format.split("||"):
        if part in ("epoch_millis", "strict_date_optional_time", "date_optional_time"):
            formats.append(None)
            continue
        pattern = part
        for token, directive in _JAVA_DATE_TOKENS:
            pattern = pattern.replace(token, directive)
        formats.append(pattern)

    def parse(value: Any) -> Any:
        for pattern in formats:
            try:
                if pattern is None:
                    return parse_timestamp(value)
                parsed = datetime.strptime(str(value), pattern).replace(tzinfo=UTC)
                return int(parsed.timestamp() * 1000)
            except ValueError:
                continue
        raise ValueError(f"{value!r} does not match the date format {java_format!r}")

    return parse


def _index_custom_dates(events: list[dict], mapping: dict[str, Any]) -> dict[str, Any]:
    # A date field with its own `format` is indexed as epoch ms, which is what filters and join
    # keys see; the engine then treats it as a plain date. Indices can use different formats for
    # one field (sample1 vs sample2), so each index is converted with its own mapping.
    out = dict(mapping)
    for name, spec in mapping.items():
        if not (isinstance(spec, dict) and spec.get("type") == "date" and "format" in spec):
            continue
        parse = _date_parser(spec["format"])
        parent, _, leaf = name.rpartition(".")
        for ev in events:
            holder = ev
            for part in parent.split(".") if parent else ():
                holder = holder.get(part) if isinstance(holder, dict) else None
            if isinstance(holder, dict) and holder.get(leaf) is not None:
                holder[leaf] = parse(holder[leaf])
        out[name] = {k: v for k, v in spec.items() if k != "format"}
    return out


def load_sample_dataset(directory: Path, indices: tuple[str, ...]) -> Dataset:
    """Load the indices one sample request searches (``sample/data/<name>.data``), in order."""
    data_dir = directory / "sample" / "data"
    events: list[dict] = []
    mapping: dict[str, Any] = {}
    for name in indices:
        index_events = load_data_file(data_dir / f"{name}.data")
        index_mapping = _index_custom_dates(index_events, load_mapping(data_dir / f"{name}.mapping"))
        for field_name, spec in index_mapping.items():
            mapping.setdefault(field_name, spec)
        events.extend(index_events)
    return Dataset(",".join(indices), events, _dynamic_types(events, mapping), "id")


_JOIN_KEYS_RE = re.compile(r"(?m)^(\s*join_keys\s*=\s*\[[^\]]*\])")


def load_suite(path: Path) -> list[dict[str, Any]]:
    """Parse a suite file; a bare ``null`` in ``join_keys`` (not valid TOML) becomes ``"null"``."""
    raw = path.read_text(encoding="utf-8")
    raw = _JOIN_KEYS_RE.sub(lambda m: re.sub(r'(?<!")\bnull\b(?!")', '"null"', m.group(1)), raw)
    return tomllib.loads(raw).get("queries", [])


# ---------------------------------------------------------------- running


def _key_text(v: Any) -> str:
    return "null" if v is None else es_string(v)


def _run_query(entry: dict[str, Any], dataset: Dataset, sample: bool = False) -> tuple[str, str]:
    text = entry["query"].strip()
    try:
        if sample:
            # Sample requests send no tiebreaker; `size` and `max_samples_per_key` come from the entry.
            program = compile_query(
                text,
                field_types=dataset.field_types,
                size=entry.get("size", 10),
                max_samples_per_key=entry.get("max_samples_per_key", 1),
            )
        else:
            program = compile_query(
                text, tiebreaker_field=dataset.tiebreaker, field_types=dataset.field_types
            )
        matches = list(program.run(dataset.events))
    except EqlUnsupportedError as exc:
        return "unsupported", str(exc)
    except Exception as exc:  # noqa: BLE001 - every other error is a failed query, reported
        return "failed", f"{type(exc).__name__}: {exc}"
    tb = dataset.tiebreaker
    ids: list[Any] = []
    keys: list[str] = []
    for m in matches:
        for ev in m.events:
            ids.append(-1 if ev is None else ev.get(tb))
        keys.extend(_key_text(k) for k in m.join_keys)
    expected = entry.get("expected_event_ids", [])
    alternatives = expected if expected and isinstance(expected[0], list) else [expected]
    if ids not in alternatives:
        return "failed", f"expected ids {expected}, got {ids}"
    if "join_keys" in entry:
        want = [_key_text(k) for k in entry["join_keys"]]
        if keys != want:
            return "failed", f"expected join_keys {want}, got {keys}"
    return "passed", ""


def run_suites(directory: Path, keyword_type: str = "keyword") -> SuiteResult:
    """Run every active query of the five suites in ``directory``."""
    report = SuiteResult()
    datasets: dict[str, Dataset] = {}
    for file, data_name in SUITES.items():
        path = directory / file
        if not path.is_file():
            continue
        if data_name not in datasets:
            datasets[data_name] = load_dataset(directory, data_name, keyword_type)
        for entry in load_suite(path):
            status, detail = _run_query(entry, datasets[data_name])
            report.results.append(QueryResult(file, entry.get("name", "?"), status, detail))
    return report


def run_sample_suites(directory: Path) -> SuiteResult:
    """Run every query of the sample suites in ``directory/sample`` (each against its own indices)."""
    report = SuiteResult()
    for file, indices in SAMPLE_SUITES.items():
        path = directory / file
        if not path.is_file():
            continue
        dataset = load_sample_dataset(directory, indices)
        for entry in load_suite(path):
            status, detail = _run_query(entry, dataset, sample=True)
            report.results.append(QueryResult(file, entry.get("name", "?"), status, detail))
    return report


def _print_report(report: SuiteResult, files: list[str], label: str, verbose: bool) -> None:
    for file in files:
        if not any(r.file == file for r in report.results):
            continue
        print(
            f"{file}: {report.count('passed', file)} passed, {report.count('failed', file)} failed, "
            f"{report.count('unsupported', file)} unsupported"
        )
        if verbose:
            for r in report.results:
                if r.file == file and r.status != "passed":
                    print(f"  {r.status}: {r.name}: {r.detail}")
    print(
        f"{label}: {report.count('passed')} passed, {report.count('failed')} failed, "
        f"{report.count('unsupported')} unsupported of {report.total}"
    )


def _clean(report: SuiteResult) -> bool:
    return report.count("failed") == 0 and report.count("unsupported") == 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit 0 when every query passes, 1 otherwise, 2 on usage errors."""
    ap = argparse.ArgumentParser(
        prog="python -m deployer.eql.conformance", description=__doc__.splitlines()[0]
    )
    ap.add_argument("directory", type=Path, help="folder with the Elasticsearch EQL conformance files")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every failed or unsupported query")
    ap.add_argument(
        "--keyword-type",
        choices=("keyword", "wildcard"),
        default="keyword",
        help="type substituted for the mapping placeholder (results must not depend on it)",
    )
    args = ap.parse_args(argv)
    if not args.directory.is_dir():
        print(f"error: {args.directory} is not a directory", file=sys.stderr)
        return 2
    report = run_suites(args.directory, args.keyword_type)
    if report.total == 0:
        print(f"error: no conformance suites found in {args.directory}", file=sys.stderr)
        return 2
    _print_report(report, list(SUITES), "conformance", args.verbose)
    samples = run_sample_suites(args.directory)
    if samples.total:
        _print_report(samples, list(SAMPLE_SUITES), "sample conformance", args.verbose)
    return 0 if _clean(report) and _clean(samples) else 1


if __name__ == "__main__":
    sys.exit(main())
