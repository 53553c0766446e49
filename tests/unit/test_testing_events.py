"""The ndjson event reader: files, stdin, gzip by content, and every bad input naming its line."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from deployer.testing.events import (
    Event,
    EventsError,
    default_field_types,
    iter_events,
    read_events,
)

TS = "2024-05-01T12:00:00.000Z"


def _line(**fields: object) -> str:
    doc = {"@timestamp": TS, **fields}
    return json.dumps(doc)


def _write(tmp_path: Path, text: str, name: str = "events.ndjson") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path | str, **kw: object) -> EventsError:
    with pytest.raises(EventsError) as info:
        read_events(path, **kw)  # type: ignore[arg-type]
    return info.value


def test_reads_objects_with_line_numbers_and_skips_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, _line(event={"id": "a"}) + "\n\n   \n" + _line(event={"id": "b"}) + "\n")
    events = read_events(path)
    assert [e["event"]["id"] for e in events] == ["a", "b"]
    assert [e.line for e in events] == [1, 4]
    assert all(isinstance(e, Event) and isinstance(e, dict) for e in events)


def test_last_line_without_newline_is_read(tmp_path: Path) -> None:
    path = _write(tmp_path, _line(event={"id": "a"}) + "\n" + _line(event={"id": "b"}))
    assert [e["event"]["id"] for e in read_events(path)] == ["a", "b"]


def test_truncated_last_line_names_line_and_says_truncated(tmp_path: Path) -> None:
    path = _write(tmp_path, _line(event={"id": "a"}) + "\n" + _line(event={"id": "b"})[:-7])
    err = _error(path)
    assert err.line == 2
    assert str(err).startswith(f"{path}:2: invalid JSON")
    assert "truncated" in str(err)


def test_truncated_inside_a_string(tmp_path: Path) -> None:
    path = _write(tmp_path, _line() + '\n{"@timestamp": "2024')
    err = _error(path)
    assert err.line == 2
    assert "truncated" in err.message


def test_malformed_line_in_the_middle(tmp_path: Path) -> None:
    path = _write(tmp_path, _line() + "\n{not json}\n" + _line() + "\n")
    err = _error(path)
    assert (err.line, err.source) == (2, str(path))
    assert "invalid JSON at column" in err.message
    assert "truncated" not in err.message


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[1, 2]", "an array"),
        ('"x"', "a string"),
        ("42", "a number"),
        ("null", "null"),
        ("true", "a boolean"),
    ],
)
def test_non_object_line(tmp_path: Path, text: str, kind: str) -> None:
    err = _error(_write(tmp_path, _line() + "\n" + text + "\n"))
    assert err.line == 2
    assert f"expected a JSON object (one event per line), got {kind}" in err.message


def test_missing_timestamp(tmp_path: Path) -> None:
    err = _error(_write(tmp_path, json.dumps({"event": {"id": "x"}}) + "\n"))
    assert err.line == 1
    assert "missing @timestamp" in err.message


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-45T00:00:00Z", "", None, True, [TS], {"a": 1}])
def test_unparsable_timestamp(tmp_path: Path, bad: object) -> None:
    err = _error(_write(tmp_path, json.dumps({"@timestamp": bad}) + "\n"))
    assert err.line == 1
    assert "@timestamp" in err.message


@pytest.mark.parametrize(
    "good",
    ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123+02:00", "2024-05-01T12:00:00.123456Z", 1714564800000],
)
def test_timestamp_forms(tmp_path: Path, good: object) -> None:
    events = read_events(_write(tmp_path, json.dumps({"@timestamp": good}) + "\n"))
    assert events[0]["@timestamp"] == good


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.ndjson"
    path.write_bytes((_line() + "\n").encode() + b'{"@timestamp": "' + TS.encode() + b'", "x": "caf\xe9"}\n')
    err = _error(path)
    assert err.line == 2
    assert "not UTF-8" in err.message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + (_line(event={"id": "a"}) + "\n").encode())
    assert read_events(path)[0]["event"]["id"] == "a"


def test_gzip_detected_by_magic_not_extension(tmp_path: Path) -> None:
    body = (_line(event={"id": "a"}) + "\n" + _line(event={"id": "b"}) + "\n").encode()
    path = tmp_path / "events.ndjson"  # no .gz on purpose
    path.write_bytes(gzip.compress(body))
    assert [e["event"]["id"] for e in read_events(path)] == ["a", "b"]
    # ...and a plain file named .gz is read as plain text.
    plain = tmp_path / "plain.ndjson.gz"
    plain.write_bytes(body)
    assert len(read_events(plain)) == 2


def test_gzip_errors_name_the_line(tmp_path: Path) -> None:
    body = (_line(event={"id": "a"}) + "\n" + "{oops\n").encode()
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(body))
    assert _error(path).line == 2


def test_truncated_gzip(tmp_path: Path) -> None:
    body = "".join(_line(event={"id": str(i)}) + "\n" for i in range(2000)).encode()
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(body)[:-200])
    err = _error(path)
    assert "gzip" in err.message
    assert err.line is not None and err.line > 1


def test_stdin_plain_and_gzip() -> None:
    body = (_line(event={"id": "a"}) + "\n").encode()
    assert read_events("-", stdin=io.BytesIO(body))[0]["event"]["id"] == "a"
    assert read_events("-", stdin=io.BytesIO(gzip.compress(body)))[0]["event"]["id"] == "a"
    with pytest.raises(EventsError) as info:
        read_events("-", stdin=io.BytesIO(b"[]\n"))
    assert str(info.value).startswith("<stdin>:1: ")


def test_missing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope.ndjson")
    assert err.line is None
    assert "cannot open" in err.message


def test_iter_events_is_lazy(tmp_path: Path) -> None:
    path = _write(tmp_path, _line(event={"id": "a"}) + "\n[]\n")
    it = iter_events(path)
    assert next(it)["event"]["id"] == "a"
    with pytest.raises(EventsError):
        next(it)


# ---------------------------------------------------------------- field types against ECS


@pytest.fixture(scope="module")
def types():  # noqa: ANN201
    lookup = default_field_types()
    assert lookup is not None
    return lookup


def _read_one(tmp_path: Path, types, **fields: object) -> dict:  # noqa: ANN001
    return read_events(_write(tmp_path, _line(**fields) + "\n"), field_types=types)[0]


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"process": {"pid": "abc"}}, "'process.pid' is long"),
        ({"process": {"pid": True}}, "'process.pid' is long"),
        ({"process": {"pid": {"x": 1}}}, "'process.pid' is long in ECS but the value is an object"),
        ({"destination": {"ip": "not-an-ip"}}, "'destination.ip' is ip"),
        ({"destination": {"ip": 12}}, "'destination.ip' is ip"),
        ({"event": {"created": "last tuesday"}}, "'event.created' is date"),
        (
            {"process": {"args": ["a", {"b": 1}]}},
            "'process.args' is keyword in ECS but element 1 is an object",
        ),
        ({"process": {"pid": [1, ["2", "x"]]}}, "'process.pid' is long"),
    ],
)
def test_wrong_types_are_errors(tmp_path: Path, types, fields: dict, needle: str) -> None:  # noqa: ANN001
    err = _error(_write(tmp_path, _line(**fields) + "\n"), field_types=types)
    assert err.line == 1
    assert needle in err.message
    assert "Elasticsearch would reject" in err.message or "object" in err.message


def test_coercions_elasticsearch_applies(tmp_path: Path, types) -> None:  # noqa: ANN001
    event = _read_one(
        tmp_path,
        types,
        process={"pid": "42", "args": ["a", [1, [True]]], "name": "x.exe"},
        event={"id": 7, "code": 1},
        destination={"ip": "2001:db8::1", "port": "443"},
        custom={"anything": {"goes": [1, "x"]}},
    )
    assert event["process"]["pid"] == 42
    assert event["process"]["args"] == ["a", "1", "true"]
    assert event["event"] == {"id": "7", "code": "1"}
    assert event["destination"]["port"] == 443
    assert event["custom"] == {"anything": {"goes": [1, "x"]}}


def test_dotted_keys_are_checked_too(tmp_path: Path, types) -> None:  # noqa: ANN001
    err = _error(
        _write(tmp_path, json.dumps({"@timestamp": TS, "process.pid": "x"}) + "\n"), field_types=types
    )
    assert "'process.pid' is long" in err.message


def test_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "crlf.ndjson"
    path.write_bytes((_line(event={"id": "a"}) + "\r\n" + _line(event={"id": "b"}) + "\r\n").encode())
    assert [e["event"]["id"] for e in read_events(path)] == ["a", "b"]


def _reader_event(doc: dict) -> dict:
    from deployer.testing.events import LineParser, default_field_types

    event, _ = LineParser(default_field_types(), "t")(json.dumps(doc), 1)
    return event


def test_events_without_dotted_keys_are_marked_dot_free() -> None:
    from deployer.eql.values import DotFree

    plain = {"@timestamp": 1, "process": {"name": "a", "parent": {"name": "b"}}, "labels": {"x": 1}}
    assert isinstance(_reader_event(plain), DotFree)
    # A dotted key at any depth of objects, or an object the reader does not walk, is not promised.
    for doc in (
        {"@timestamp": 1, "process.name": "a"},
        {"@timestamp": 1, "process": {"parent.name": "b"}},
        {"@timestamp": 1, "process": {"parent": {"pe.original_file_name": "b"}}},
        {"@timestamp": 1, "process": {"Ext": {"effective_parent.name": "b"}}},
        {"@timestamp": 1, "geo": {"location": {"lat.x": 1, "lon": 2}}},
    ):
        assert not isinstance(_reader_event(doc), DotFree), doc


@pytest.mark.parametrize(
    "doc",
    [
        {"@timestamp": 1, "process": {"pe": None}},
        {"@timestamp": 1, "process": {"pe.original_file_name": "x.exe"}},
        {"@timestamp": 1, "process": {"parent": {"pe.original_file_name": "p.exe"}}},
        {"@timestamp": 1, "process": {"Ext": {"effective_parent.executable": "C:\\x.exe"}}},
        {"@timestamp": 1, "process.Ext": {"effective_parent": {"executable": "C:\\y.exe"}}},
        {"@timestamp": 1, "process": [{"pe": {"original_file_name": "a"}}, {"pe": {"original_file_name": "b"}}]},
        {"@timestamp": 1, "process": {"name": "n"}},
    ],
)
def test_field_reads_are_the_same_on_marked_and_plain_documents(doc: dict) -> None:
    from deployer.eql.values import make_getter

    event = _reader_event(doc)
    plain = json.loads(json.dumps(dict(event)))
    for path in (
        "process.pe.original_file_name",
        "process.parent.pe.original_file_name",
        "process.Ext.effective_parent.executable",
        "process.name",
        "process.pe",
    ):
        for keep_missing in (False, True):
            get = make_getter(path, keep_missing)
            assert get(event) == get(plain), (path, doc)
