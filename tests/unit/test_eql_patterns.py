"""Several wildcard patterns at once (`wildcards_matcher`) answer as any one of them would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.eql.patterns import wildcard_matcher, wildcards_matcher

CHARS = "aAbB.\\\\*?ΣσςİiK"
PATTERN = st.text(alphabet=CHARS, max_size=6)
VALUE = st.text(alphabet="aAbB.\\\\ΣσςİiKk", max_size=8)


@settings(max_examples=400, deadline=None)
@given(st.lists(PATTERN, min_size=1, max_size=8), st.lists(VALUE, min_size=1, max_size=8), st.booleans())
def test_any_of_patterns_equals_each_pattern_alone(
    patterns: list[str], values: list[str], insensitive: bool
) -> None:
    together = wildcards_matcher(patterns, insensitive)
    alone = [wildcard_matcher(p, insensitive) for p in patterns]
    for value in values:
        assert together(value) == any(m(value) for m in alone), (patterns, value)


def test_each_shape_is_recognised() -> None:
    match = wildcards_matcher(["C:\\Windows\\*", "*.EXE", "*\\temp\\*", "a?c", "exact", "x*y"], True)
    assert match("c:\\windows\\cmd")
    assert match("report.exe")
    assert match("c:\\users\\x\\Temp\\y")
    assert match("ABC") and not match("abbc")
    assert match("EXACT") and not match("exactly")
    assert match("x-long-y") and not match("x-long-z")
    assert not match("d:\\windows\\cmd")
    assert wildcards_matcher(["a", "*"], False)("anything at all")
    sensitive = wildcards_matcher(["*.EXE", "Cmd*"], False)
    assert sensitive("A.EXE") and not sensitive("a.exe") and sensitive("Cmd.exe") and not sensitive("cmd.exe")
