"""The rule-set program (`deployer.eql.ruleset`): same matches as evaluating each rule on its own."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.eql import parser
from deployer.eql.engine import Match, compile_query
from deployer.eql.ruleset import RuleSet, guard_of

CATEGORIES = ["process", "network", "file"]
NAMES = [
    "cmd.exe",
    "CMD.EXE",
    "Cmd.exe",
    "powershell.exe",
    "mshta.exe",
    "ΑΣ",
    "ας",
    "5",
    "c:\\windows\\cmd.exe",
    # Characters whose case-insensitive match or lower case is not ASCII's: `ſ` matches `s`,
    # `İ`/`ı` match `i` under re.IGNORECASE; `İ` lower-cases to two characters; final sigma.
    "x.ſh",
    "İcmd.exe",
    "ıcmd.EXE",
    "ΣCMD.EXE",
    "cmd.exeΣ",
    "ΑΣΑ.exe",
]
PATHS = [
    "c:\\windows\\system32\\cmd.exe",
    "C:\\Users\\x\\a.HTA",
    "/tmp/x.sh",
    "/usr/bin/curl",
    "ασ.js",
    "İ:\\windows\\x.exe",
]
# Regexes with a literal prefix or suffix (atoms), and ones whose literals must not be indexed.
REGEXES = [
    "cmd.*",
    "CMD.*",
    ".*\\.exe",
    ".*\\.EXE",
    "[a-z]+\\.exe",
    ".*sh",
    ".*SH",
    "İcmd.*",
    "ΣCMD.*",
    ".*exeΣ",
    "c:.*|.*exe",
    '"c:"\\\\.*',
    "(cmd|ps).*",
    "/tmp/x\\.sh",
    "cmd.ex?",
]


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\")


def _leaf(rnd: random.Random) -> str:
    f = rnd.choice(["process.name", "process.args", "file.path", "user.name"])
    name = rnd.choice(NAMES)
    path = rnd.choice(PATHS)
    any_value = rnd.choice(NAMES + PATHS)
    return rnd.choice(
        [
            f'{f} : "{name}"',
            f'{f} == "{name}"',
            f'{f} != "{name}"',
            f'{f} : ("{name}", "{rnd.choice(NAMES)}")',
            f'{f} in ("{name}", "{rnd.choice(NAMES)}")',
            f'{f} in~ ("{name}", "pOwErShElL.exe")',
            f'{f} not in ("{name}")',
            f'{f} : "{path[:6]}*"',
            f'{f} : "*{path[-4:]}"',
            f'{f} : "?{name[1:]}"',
            f'{f} like "{path[:5]}*"',
            f'{f} like~ "*{name[-3:]}"',
            f'{f} : "*{name[1:4]}*"',
            f'{f} regex~ ".*{rnd.choice(["exe", "sh"])}"',
            f'startsWith~({f}, "{name[:3]}")',
            f"port == {rnd.choice([5, 80, 443])}",
            'port in ("5", "80")',
            f'port : "{rnd.choice(["5", "44*"])}"',
            f"{f} == null",
            f"{f} != null",
            f"not {f} == null",
            f"?{f} != null",
            f'{f} {rnd.choice(["regex", "regex~"])} """{rnd.choice(REGEXES)}"""',
            f'{f} like "{_esc(any_value[:4])}*"',
            f'{f} like "{_esc(any_value[:2])}*"',
            f'{f} like "?{_esc(any_value[1:5])}*"',
            f'{f} like "*{_esc(any_value[-4:])}"',
            f'{f} : "??{_esc(name[2:])}"',
            f'{f} : "*{_esc(any_value[:-1][-4:])}?"',
            f'{f} : "{_esc(path[:2])}?{_esc(path[3:6])}*"',
            f"{f} == {rnd.choice([5, 'true', 'false'])}",
            f'{f} in (5, "cmd.exe")',
            f"port > {rnd.choice([5, 80])}",
            f'port in ({rnd.choice(["80", "5.0", "443"])}, "{rnd.choice(["443", "80", "x"])}")',
            f"port == {rnd.choice(['443.0', '80', '5'])}",
            "true",
        ]
    )


def _cond(rnd: random.Random, depth: int = 0) -> str:
    if depth >= 2 or rnd.random() < 0.4:
        return _leaf(rnd)
    op = rnd.choice(["and", "and", "or", "not"])
    if op == "not":
        return f"not ({_cond(rnd, depth + 1)})"
    return f"({_cond(rnd, depth + 1)} {op} {_cond(rnd, depth + 1)})"


def _subquery(rnd: random.Random) -> str:
    return f"{rnd.choice([*CATEGORIES, 'any'])} where {_cond(rnd)}"


def _query(rnd: random.Random) -> str:
    pipe = rnd.choice(["", "", "", " | head 2", " | tail 2"])
    if rnd.random() < 0.4:
        return _subquery(rnd) + pipe
    if rnd.random() < 0.1:
        steps = " ".join(f"[{_subquery(rnd)}]" for _ in range(rnd.randint(1, 3)))
        return f"sample {rnd.choice(['by host ', 'by user.name ', ''])}{steps}{pipe}"
    by = rnd.choice(["by host ", "by ?host ", "", "by user.name "])
    span = rnd.choice(["with maxspan=5ms ", "with maxspan=3ms ", ""])
    steps = [f"[{_subquery(rnd)}]" for _ in range(rnd.randint(1, 3))]
    if span and rnd.random() < 0.25:
        steps.insert(rnd.randint(0, len(steps)), f"![{_subquery(rnd)}]")
    if rnd.random() < 0.2 and len(steps) > 1:
        steps[-1] = steps[-1] + " with runs=2"
    until = f" until [{_subquery(rnd)}]" if rnd.random() < 0.25 else ""
    return f"sequence {by}{span}{' '.join(steps)}{until}{pipe}"


def _value(rnd: random.Random, pool: list[str]) -> object:
    r = rnd.random()
    if r < 0.15:
        return None
    if r < 0.25:
        return [rnd.choice(pool), rnd.choice(pool)]
    if r < 0.3:
        return rnd.choice([5, 5.0, True, [5, "cmd.exe"]])
    return rnd.choice(pool)


def _events(rnd: random.Random, n: int) -> list[dict]:
    events = []
    ts = 0
    for i in range(n):
        ts += rnd.choice([0, 0, 1, 1, 2, 5])
        ev: dict = {"@timestamp": ts, "seq": i, "host": rnd.choice(["a", "b", None, ["a", "b"]])}
        cat = rnd.random()
        if cat < 0.85:
            ev["event"] = {"category": rnd.choice(CATEGORIES)}
        elif cat < 0.95:
            ev["event"] = {"category": [rnd.choice(CATEGORIES), rnd.choice(CATEGORIES)]}
        ev["process"] = {"name": _value(rnd, NAMES), "args": _value(rnd, NAMES + PATHS)}
        ev["file"] = {"path": _value(rnd, PATHS + NAMES)}
        ev["user"] = {"name": _value(rnd, NAMES)}
        if rnd.random() < 0.1:
            # A dotted key instead of nested objects.
            ev["process.name"] = ev["process"].pop("name")
        if rnd.random() < 0.05:
            ev["user"]["name"] = rnd.choice([[], [None], {"x": 1}, [[None, "cmd.exe"]]])
        if rnd.random() < 0.05:
            # An array of objects, a value where an object is expected, a dotted key inside.
            ev["file"] = rnd.choice(
                [[ev["file"], {"path": rnd.choice(PATHS)}], "x", {"path.x": 1, "path": rnd.choice(PATHS)}]
            )
        ev["port"] = rnd.choice([5, 80, 443, "5", "443", None, 80.0, "80", [443, "x"], 10**400, True])
        events.append(ev)
    return events


def _ids(matches: list[Match]) -> list[tuple]:
    return [(tuple(None if e is None else e["seq"] for e in m.events), tuple(m.join_keys)) for m in matches]


def _compile_all(queries: list[str]) -> dict:
    programs = {}
    for i, q in enumerate(queries):
        try:
            programs[i] = compile_query(q)
        except Exception:  # noqa: BLE001 - generated queries the verifier refuses are skipped
            continue
    return programs


def _each_alone(programs: dict, events: list[dict]) -> dict:
    out = {}
    for key, program in programs.items():
        runner = program.stream()
        matches: list[Match] = []
        for ev in events:
            matches.extend(runner.push(ev, ev["@timestamp"]))
        matches.extend(runner.finish())
        out[key] = _ids(matches)
    return out


def _together(programs: dict, events: list[dict], **kwargs) -> dict:
    runner = RuleSet(programs, **kwargs).stream()
    pairs = []
    for ev in events:
        pairs.extend(runner.push(ev, ev["@timestamp"]))
    pairs.extend(runner.finish())
    out: dict = {key: [] for key in programs}
    for key, match in pairs:
        out[key].append(match)
    return {key: _ids(ms) for key, ms in out.items()}


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32))
def test_ruleset_equals_each_rule_alone(seed: int) -> None:
    rnd = random.Random(seed)
    programs = _compile_all([_query(rnd) for _ in range(25)])
    events = _events(rnd, 150)
    assert _together(programs, events) == _each_alone(programs, events)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32))
def test_prefilter_is_an_event_removed_for_that_rule_only(seed: int) -> None:
    rnd = random.Random(seed)
    programs = _compile_all([_query(rnd) for _ in range(10)])
    events = _events(rnd, 120)

    def keep(ev: dict) -> bool:
        return ev["seq"] % 3 != 0

    filtered = [ev for ev in events if keep(ev)]
    filters = {key: keep for key in programs if key % 2 == 0}
    together = _together(programs, events, prefilters=filters)
    alone_all = _each_alone(programs, events)
    alone_filtered = _each_alone(programs, filtered)
    for key in programs:
        expected = alone_filtered[key] if key in filters else alone_all[key]
        assert together[key] == expected, key


def test_guards_pick_the_selective_conjunct_and_union_or() -> None:
    program = compile_query(
        'process where event.type == "start" and (process.name : "cmd.exe" or '
        '?process.pe.original_file_name in ("Cmd.Exe", "x")) and process.args : "*whoami*"'
    )
    guard = guard_of(program.query.body.condition, program)
    assert sorted(guard) == [
        ("process.name", "eq", "cmd.exe"),
        ("process.pe.original_file_name", "eq", "cmd.exe"),
        ("process.pe.original_file_name", "eq", "x"),
    ]
    wild = compile_query('file where file.path : ("C:\\\\Users\\\\*\\\\Down*", "*.HTA")')
    assert sorted(guard_of(wild.query.body.condition, wild)) == [
        ("file.path", "pre", "c:\\users"),
        ("file.path", "suf", ".hta"),
    ]
    # Nothing cheap and necessary: negations, a branch without a guard.
    for cond in [
        'not process.name : "a"',
        'process.name != "a"',
        "process.name == null",
        'process.name : "a*" or true',
    ]:
        program = compile_query(f"process where {cond}")
        assert guard_of(program.query.body.condition, program) is None


def _guard(cond: str) -> list | None:
    program = compile_query(f"process where {cond}")
    guard = guard_of(program.query.body.condition, program)
    return None if guard is None else sorted(guard)


def test_presence_atoms() -> None:
    has = [("process.pe.original_file_name", "has", "")]
    assert _guard("process.pe.original_file_name != null") == has
    assert _guard("?process.pe.original_file_name != null") == has
    assert _guard("not process.pe.original_file_name == null") == has
    # Any comparison with a constant needs a value; so does a pattern without a literal edge.
    assert _guard("process.pe.original_file_name == true") == has
    assert _guard("process.pe.original_file_name > 5") == has
    assert _guard('process.pe.original_file_name in (true, "a")') == has
    assert _guard('process.pe.original_file_name : "*cm*"') == has
    # An eq atom is preferred to a presence test; an optional field's presence to a broad field.
    assert _guard('process.pe.original_file_name != null and process.name : "cmd.exe"') == [
        ("process.name", "eq", "cmd.exe")
    ]
    assert _guard('host.os.type == "windows" and process.hash.sha256 != null') == [
        ("process.hash.sha256", "has", "")
    ]


def test_regex_atoms_from_literal_edges() -> None:
    assert _guard('process.name regex~ """[a-z0-9]\\.exe"""') == [("process.name", "suf", ".exe")]
    assert _guard('process.name regex """CMD\\..*"""') == [("process.name", "pre", "cmd.")]
    # Quoted strings and groups are spliced into the sequence.
    assert _guard('process.name regex """(("cmd")\\.)e.*"""') == [("process.name", "pre", "cmd.e")]
    assert _guard('process.name regex """.*(a|b)\\.dll"""') == [("process.name", "suf", ".dll")]
    # Case-insensitive `s`/`i` also match `ſ`/`İ`/`ı`, which do not lower-case to them: cut there.
    assert _guard('process.name regex~ """.*\\system\\.exe"""') == [("process.name", "suf", "tem.exe")]
    assert _guard('process.name regex """.*\\system\\.exe"""') == [("process.name", "suf", "stem.exe")]
    # The parser factors what alternatives share; a quantified character ends the literal.
    assert _guard('process.name regex """abc|abd"""') == [("process.name", "pre", "ab")]
    assert _guard('process.name regex """abc?d"""') == [("process.name", "pre", "ab")]
    # Refused: top-level alternation, no literal edge, a non-ASCII edge: only the presence remains.
    for rx in ["abc|xyz", "[a-c]+", ".*ΑΣ", "ΑΣ.*", "(abc)+", "b?[cd]"]:
        assert _guard(f'process.name regex """{rx}"""') == [("process.name", "has", "")], rx


def test_case_sensitive_like_keeps_ascii_edges_only() -> None:
    assert _guard('process.name like "CMD*"') == [("process.name", "pre", "cmd")]
    assert _guard('process.name like "*ΣΑ.EXE"') == [("process.name", "suf", ".exe")]
    assert _guard('process.name like "ΣΑx*"') == [("process.name", "has", "")]
    # A `?` may stand for a character that lower-cases to two: no offset when case-sensitive,
    # only the literal somewhere in the value.
    assert _guard('process.name like "?:\\\\Windows*"') == [("process.name", "sub", ":\\windows")]


def test_wildcard_offsets_past_leading_and_trailing_question_marks() -> None:
    assert _guard('process.executable : "?:\\\\PerfLogs\\\\*.exe"') == [
        ("process.executable", "pre", "?:\\perflo")
    ]
    assert _guard('process.executable : "*\\\\cmd.ex?"') == [("process.executable", "suf", "\\cmd.ex?")]
    # One literal run: its end is kept.
    assert _guard('process.executable : "?:\\\\Windows\\\\explorer.exe"') == [
        ("process.executable", "suf", "orer.exe")
    ]


def test_presence_dispatch_skips_events_without_the_field() -> None:
    program = compile_query("process where process.hash.sha256 != null")
    calls: list[dict] = []
    inner = program._cond

    def counted(ev: dict) -> bool:
        calls.append(ev)
        return inner(ev)

    program._cond = counted
    runner = RuleSet({"r": program}).stream()
    base = {"@timestamp": 1, "event": {"category": "process"}}
    assert runner.push({**base, "process": {"name": "a"}}) == []
    assert runner.push({**base, "process": {"hash": {"sha256": []}}}) == []
    assert calls == []
    assert len(runner.push({**base, "process": {"hash": {"sha256": ["x"]}}})) == 1
    assert len(runner.push({**base, "process.hash.sha256": 5})) == 1
    assert len(calls) == 2


def test_dispatch_evaluates_only_candidate_steps() -> None:
    calls: list[str] = []
    programs = {}
    for name in ["a.exe", "b.exe", "c.exe"]:
        program = compile_query(f'process where process.name : "{name}"')
        inner = program._cond

        def counted(ev: dict, inner=inner, name=name) -> bool:
            calls.append(name)
            return inner(ev)

        program._cond = counted
        programs[name] = program
    runner = RuleSet(programs).stream()
    out = runner.push({"@timestamp": 1, "event": {"category": "process"}, "process": {"name": "B.EXE"}})
    assert [k for k, _ in out] == ["b.exe"]
    assert calls == ["b.exe"]
    # A number is not a string: every rule guarded on the field is evaluated.
    calls.clear()
    runner.push({"@timestamp": 2, "event": {"category": "process"}, "process": {"name": 5}})
    assert sorted(calls) == ["a.exe", "b.exe", "c.exe"]


def test_out_of_order_input_is_an_error() -> None:
    runner = RuleSet({"r": compile_query("any where true")}).stream()
    runner.push({"@timestamp": 5})
    with pytest.raises(ValueError, match="out of order"):
        runner.push({"@timestamp": 4})


def test_rules_the_dispatch_cannot_drive_run_on_their_own() -> None:
    tb = compile_query("sequence [process where true] [file where true]", tiebreaker_field="seq")
    other_time = compile_query("process where true", timestamp_field="t")
    ruleset = RuleSet({"tb": tb, "t": other_time})
    assert ruleset.own_runner == ["tb", "t"]
    runner = ruleset.stream()
    out = runner.push({"@timestamp": 1, "t": 1, "seq": 1, "event": {"category": "process"}})
    out += runner.push({"@timestamp": 2, "t": 2, "seq": 2, "event": {"category": "file"}})
    assert sorted(k for k, _ in out) == ["t", "tb"]


def test_parsed_query_ast_is_accepted() -> None:
    program = compile_query(parser.parse("network where destination.port == 443"))
    runner = RuleSet({1: program}).stream()
    assert runner.push({"@timestamp": 0, "event": {"category": "network"}, "destination": {"port": 443}})


def test_sample_queries_are_dispatched_to_their_steps_only() -> None:
    sample = compile_query(
        'sample by host [process where process.name == "a"] [file where file.path : "*.x"]'
    )
    seq = compile_query("sequence by host [process where true] [file where true]")
    programs = {"sample": sample, "seq": seq}
    ruleset = RuleSet(programs)
    assert ruleset.own_runner == []
    events = [
        {"@timestamp": 1, "seq": 0, "host": "a", "event": {"category": "process"}, "process": {"name": "a"}}
    ]
    for i in range(1, 60):
        category = "process" if i % 2 else "file"
        events.append(
            {
                "@timestamp": i,
                "seq": i,
                "host": "a",
                "event": {"category": category},
                "process": {"name": "b"},
            }
        )
    events.append(
        {"@timestamp": 99, "seq": 60, "host": "a", "event": {"category": "file"}, "file": {"path": "y.x"}}
    )
    runner = ruleset.stream()
    (member,) = [m for m in runner._members if m.key == "sample"]
    pushed = []

    class Counting:
        def __init__(self, inner: object) -> None:
            self.inner = inner
            self.stopped = False

        def push(self, ev: dict, ts: int | None = None) -> list:
            pushed.append(ev["seq"])
            return self.inner.push(ev, ts)

        def finish(self) -> list:
            return self.inner.finish()

    member.runner = Counting(member.runner)
    pairs = []
    for ev in events:
        pairs.extend(runner.push(ev, ev["@timestamp"]))
    pairs.extend(runner.finish())
    # Only the two events a step can keep reach the sample's runner; the answer is its own.
    assert pushed == [0, 60]
    got = {key: _ids([m for k, m in pairs if k == key]) for key in programs}
    assert got == _each_alone(programs, events)
    assert got["sample"] == [((0, 60), ("a",))]


def test_contains_atoms_take_the_longest_literal_piece() -> None:
    assert _guard('process.command_line : "*Foo*barbaz*"') == [("process.command_line", "sub", "barbaz")]
    # A longer piece inside beats a short prefix, not a full-length one (looked up, not searched).
    assert _guard('file.path : "C:\\\\U*\\\\Downloads\\\\*"') == [("file.path", "sub", "\\downloads\\")]
    assert _guard('file.path : "C:\\\\Users\\\\*\\\\Downloads\\\\*"') == [("file.path", "pre", "c:\\users")]
    # Case-sensitive: only ASCII runs of a piece (lower-casing a sigma depends on what follows).
    assert _guard('process.command_line like "*ΣΑfoo*"') == [("process.command_line", "sub", "foo")]
    assert _guard('process.command_line like "*ΣΑfo*"') == [("process.command_line", "has", "")]
    assert _guard('process.command_line : "*ab*"') == [("process.command_line", "has", "")]


def test_many_contains_literals_are_found_by_trigram() -> None:
    words = ["whoami", "mimikatz", "sekurlsa", "-enc", "bypass", "iex(", "downloadstring", "frombase64"]
    words += [f"tool{i}x" for i in range(20)] + ["ΣΑΣ", "aſb", "İx"]
    queries = [f'process where process.command_line : "*{w}*"' for w in words]
    queries += [f'process where process.command_line like "*{w.upper()}*"' for w in words]
    queries += ['process where process.command_line : "*tool1*" and process.command_line : "*tool12*"']
    programs = _compile_all(queries)
    assert len(programs) == len(queries)
    rnd = random.Random(5)
    events = []
    for i in range(400):
        picked = rnd.sample(words, rnd.randint(0, 3))
        text = " ".join(rnd.choice([w, w.upper(), w.title()]) for w in picked)
        value: object = rnd.choice([text, [text, "x"], "", None, 5, ["ΣΑΣ"], "TOOL12X"])
        events.append(
            {"@timestamp": i, "seq": i, "event": {"category": "process"}, "process": {"command_line": value}}
        )
    together = _together(programs, events)
    assert together == _each_alone(programs, events)
    assert sum(len(v) for v in together.values()) > 100


def test_numeric_atoms() -> None:
    assert _guard("process.parent.pid == 4") == [("process.parent.pid", "num", "4.0")]
    assert _guard('destination.port in (88, 4.5, "445")') == [
        ("destination.port", "eq", "445"),
        ("destination.port", "num", "4.5"),
        ("destination.port", "num", "88.0"),
    ]
    program = compile_query("network where destination.port in (88, 445)")
    calls: list[dict] = []
    inner = program._cond

    def counted(ev: dict) -> bool:
        calls.append(ev)
        return inner(ev)

    program._cond = counted
    runner = RuleSet({"r": program}).stream()
    base = {"@timestamp": 1, "event": {"category": "network"}}
    # Another number is looked up and missed; an equal float is found; a string may equal a
    # number, so it is evaluated (and decided by the rule).
    assert runner.push({**base, "destination": {"port": 443}}) == [] and calls == []
    assert len(runner.push({**base, "destination": {"port": 88.0}})) == 1
    assert len(runner.push({**base, "destination": {"port": [1, 445]}})) == 1
    runner.push({**base, "destination": {"port": "x"}})
    assert len(calls) == 3
