"""Render a backtest: a text table, a JSON document, or a self-contained HTML page with a histogram per rule."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployer.eql.values import format_timestamp
from deployer.testing.backtest import HOUR_MS, Backtest, RuleSummary

# Most bars in one histogram; longer spans put several hours in a bar.
MAX_BARS = 240
_SPARK = "▁▂▃▄▅▆▇█"
_SPARK_WIDTH = 24


# The distinct counts of a summary, in report order.
_DISTINCT = ("hosts", "users", "entities")


def ranked(result: Backtest) -> list[RuleSummary]:
    """Rules noisiest first: alerts, then matches, then rule name."""
    return sorted(result.rules, key=lambda r: (-r.alerts, -r.matches, r.name, r.rule_id))


def _iso(ms: int | None) -> str | None:
    return format_timestamp(ms) if ms is not None else None


def _hours(result: Backtest) -> tuple[int, int] | None:
    """The first and last hour (epoch hours) with a match in any rule."""
    hours = [h for r in result.rules for h in r.hourly]
    return (min(hours), max(hours)) if hours else None


def _bars(summary: RuleSummary, span: tuple[int, int], per_bar: int) -> list[int]:
    first, last = span
    bars = [0] * ((last - first) // per_bar + 1)
    for hour, count in summary.hourly.items():
        bars[(hour - first) // per_bar] += count
    return bars


def to_json(result: Backtest) -> dict[str, Any]:
    """The backtest as a JSON-ready dict (rules noisiest first; hourly counts keyed by ISO hour).

    `estimated` lists the distinct counts (hosts, users, entities) that are estimates.
    """
    return {
        "events": result.events,
        "rules": [
            {
                "rule_id": r.rule_id,
                "name": r.name,
                "kind": r.kind,
                "building_block": r.building_block,
                "max_signals": r.max_signals,
                "interval_ms": r.interval_ms,
                "matches": r.matches,
                "alerts": r.alerts,
                "visible_alerts": r.visible_alerts,
                "matches_over_max_signals": r.capped,
                "hosts": r.hosts.count,
                "users": r.users.count,
                "entities": r.entities.count,
                "estimated": [name for name in _DISTINCT if getattr(r, name).estimated],
                "first": _iso(r.first),
                "last": _iso(r.last),
                "hourly": {format_timestamp(h * HOUR_MS): n for h, n in sorted(r.hourly.items())},
            }
            for r in ranked(result)
        ],
        "refused": [{"rule_id": x.rule_id, "name": x.name, "message": x.message} for x in result.refused],
    }


def sparkline(summary: RuleSummary, span: tuple[int, int] | None, width: int = _SPARK_WIDTH) -> str:
    """Matches over the whole time span as a row of block characters (blank where none)."""
    if span is None or not summary.hourly:
        return ""
    per_bar = max(1, math.ceil((span[1] - span[0] + 1) / width))
    bars = _bars(summary, span, per_bar)
    top = max(bars)
    return "".join(
        " " if b == 0 else _SPARK[min(len(_SPARK) - 1, (b * len(_SPARK) - 1) // top)] for b in bars
    )


def to_text(result: Backtest) -> str:
    """A table, noisiest rule first, then the refused rules."""
    span = _hours(result)
    header = [
        "rule",
        "kind",
        "matches",
        "alerts",
        "visible",
        "capped",
        "hosts",
        "users",
        "entities",
        "first",
        "last",
    ]
    rows = [header]
    for r in ranked(result):
        rows.append(
            [
                r.name or r.rule_id,
                r.kind + (" (bb)" if r.building_block else ""),
                f"{r.matches:,}",
                f"{r.alerts:,}",
                f"{r.visible_alerts:,}",
                f"{r.capped:,}",
                r.hosts.text(),
                r.users.text(),
                r.entities.text(),
                (_iso(r.first) or "-")[:19],
                (_iso(r.last) or "-")[:19],
                sparkline(r, span),
            ]
        )
    name_width = min(60, max(len(row[0]) for row in rows))
    widths = [max(len(row[i]) for row in rows) for i in range(1, len(header))]
    lines = []
    for row in rows:
        name = row[0] if len(row[0]) <= name_width else row[0][: name_width - 1] + "…"
        cells = [name.ljust(name_width)]
        for i, cell in enumerate(row[1 : len(header)]):
            cells.append(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]))
        spark = row[len(header)] if len(row) > len(header) else ""
        lines.append("  ".join(cells) + (f"  {spark}" if spark else ""))
    total_alerts = sum(r.alerts for r in result.rules)
    noisy = sum(1 for r in result.rules if r.matches)
    lines.append("")
    lines.append(
        f"{result.events:,} events, {len(result.rules)} rules: {noisy} matched, "
        f"{sum(r.matches for r in result.rules):,} matches, {total_alerts:,} alerts"
        + (f", {len(result.refused)} refused" if result.refused else "")
    )
    if span is not None:
        lines.append(
            f"histogram: {format_timestamp(span[0] * HOUR_MS)[:13]}h .. {format_timestamp(span[1] * HOUR_MS)[:13]}h"
        )
    for x in result.refused:
        lines.append(f"refused: {x.rule_id}: {x.message}")
    return "\n".join(lines) + "\n"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #ddd;vertical-align:middle}
th{text-align:left;background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.rule{max-width:28em}.id{color:#777;font-size:12px}svg{display:block}rect.b{fill:#3b6fb6}
.bb{color:#777;font-size:12px}.refused td{color:#a33}
"""


def to_html(result: Backtest) -> str:
    """A self-contained page (no scripts, no network): the table with an SVG histogram per rule."""
    span = _hours(result)
    per_bar = max(1, math.ceil((span[1] - span[0] + 1) / MAX_BARS)) if span else 1
    esc = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>dac backtest</title>",
        f"<style>{_CSS}</style></head><body><h1>Backtest</h1>",
        f"<p>{result.events:,} events, {len(result.rules)} rules, "
        f"{sum(r.matches for r in result.rules):,} matches, {sum(r.alerts for r in result.rules):,} alerts",
    ]
    if span is not None:
        out.append(
            f"; histograms from {esc(format_timestamp(span[0] * HOUR_MS))} to "
            f"{esc(format_timestamp((span[1] + 1) * HOUR_MS))}, {per_bar} hour(s) per bar"
        )
    out.append("</p><table><tr><th>rule</th><th>matches</th><th>alerts</th><th>visible</th><th>capped</th>")
    out.append(
        "<th>hosts</th><th>users</th><th>entities</th><th>first</th><th>last</th><th>matches per hour</th></tr>"
    )
    for r in ranked(result):
        kind = r.kind + (", building block" if r.building_block else "")
        out.append(
            f"<tr><td class='rule'>{esc(r.name or r.rule_id)}<div class='id'>{esc(r.rule_id)} · {esc(kind)}</div></td>"
            + "".join(
                f"<td class='n'>{esc(v)}</td>"
                for v in (
                    f"{r.matches:,}",
                    f"{r.alerts:,}",
                    f"{r.visible_alerts:,}",
                    f"{r.capped:,}",
                    r.hosts.text(),
                    r.users.text(),
                    r.entities.text(),
                )
            )
            + f"<td>{esc(_iso(r.first) or '-')}</td><td>{esc(_iso(r.last) or '-')}</td>"
            + f"<td>{_svg(r, span, per_bar)}</td></tr>"
        )
    for x in result.refused:
        out.append(
            f"<tr class='refused'><td class='rule'>{esc(x.name or x.rule_id)}<div class='id'>{esc(x.rule_id)}</div></td>"
            f"<td colspan='10'>refused: {esc(x.message)}</td></tr>"
        )
    out.append("</table></body></html>")
    return "\n".join(out) + "\n"


def _svg(summary: RuleSummary, span: tuple[int, int] | None, per_bar: int) -> str:
    if span is None or not summary.hourly:
        return ""
    bars = _bars(summary, span, per_bar)
    top = max(bars)
    width, height = max(2, 480 // len(bars)), 36
    rects = []
    for i, count in enumerate(bars):
        if count:
            h = max(1, round(height * count / top))
            start = format_timestamp((span[0] + i * per_bar) * HOUR_MS)
            rects.append(
                f"<rect class='b' x='{i * width}' y='{height - h}' width='{max(1, width - 1)}' height='{h}'>"
                f"<title>{html.escape(start)}: {count:,}</title></rect>"
            )
    return (
        f"<svg width='{len(bars) * width}' height='{height}' role='img' "
        f"aria-label='matches per hour, peak {top:,}'>{''.join(rects)}</svg>"
    )


class ProgressLine:
    """Progress text for a terminal: events read, events/s and, when the input size is known, an ETA."""

    def __init__(self, total_chars: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._total = total_chars
        self._clock = clock
        self._start = clock()

    def __call__(self, count: int, chars: int | None) -> str:
        """The line for `count` events (and `chars` characters) read so far."""
        elapsed = max(self._clock() - self._start, 1e-9)
        rate = count / elapsed
        text = f"read {count:,} events, {rate:,.0f} events/s"
        if self._total and chars:
            done = min(chars / self._total, 0.999)
            remaining = elapsed * (1 - done) / max(done, 1e-9)
            text += f", {done:.0%}, ETA {_clock_text(remaining)}"
        return text


def _clock_text(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def plain_size(path: str) -> int | None:
    """The size of an uncompressed events file, for an ETA; None for stdin and gzip."""
    if path == "-":
        return None
    p = Path(path)
    try:
        with p.open("rb") as fh:
            if fh.read(2) == b"\x1f\x8b":
                return None
        return p.stat().st_size
    except OSError:
        return None
