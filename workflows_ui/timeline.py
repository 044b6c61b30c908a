"""Lays a ``history.Timeline`` out as rows of an SVG Gantt chart (coordinates only; the template
draws it, so every label goes through the template engine's escaping).

Up to ``MAX_ROWS`` bars get a row each. Beyond that, bars are grouped by kind and name into one
row per group (first start to last end, with counts of attempts, failures and what is still
open), and turns are thinned, so a run with tens of thousands of activities stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from workflows_ui.history import NEVER, Bar, Group, Timeline
from workflows_ui.plaintext import visible, visible_name

MAX_ROWS = 300
MAX_TURN_LINES = 400
MAX_MARKERS = 200
WIDTH = 1000  # drawing area, in SVG units, right of the labels
LABEL_WIDTH = 240
ROW_HEIGHT = 20
TOP = 28
#: Each kind of marker's shape, drawn up from its point at the foot of the markers' row: one
#: shape per kind, so they are told apart without their colour (a player's signs where one fits).
MARKER_SHAPES = {
    "event": "l-4 -6 h8 z",  # a triangle pointing down at the moment
    "suspended": "m-4 0 v-7 h3 v7 z m5 0 v-7 h3 v7 z",  # pause
    "resumed": "m-3 0 v-7 l7 3.5 z",  # play
    "stalled": "l4 -4 l-4 -4 l-4 4 z",  # a diamond
    "terminated": "m-3.5 0 v-7 h7 v7 z",  # stop
    "completed": "m-4 -4 a4 4 0 1 0 8 0 a4 4 0 1 0 -8 0 z",  # a dot
}
#: What the legend calls a kind of marker, where it is not the kind's own name.
MARKER_NAMES = {"event": "event received"}
# The y of a marker's point: its shape (8 units high) sits under the time labels, which end at
# 14, and above the first row's bar, at 31: a completed run's dot, at the drawing's end, would
# otherwise cover the end of the last label.
MARKER_FOOT = 25
KEY_FOOT = 9  # the same in a legend key, drawn in a box of 10 by 10
#: The legend's keys of the bars: (the classes of its bar, its texture or "", what it is called).
#: Besides its colour, each kind has a look of its own that needs no hue (for a colour-blind
#: reader): activities plain, timers hatched, children striped, event waits dotted, retry
#: delays pale with a dashed outline; a failure has a thick outline, what is still going a
#: dashed one.
BAR_KEYS = (
    ("bar bar-activity", "", "activity"),
    ("bar bar-activity outcome-failed", "", "failed"),
    ("bar bar-timer", "timer", "timer"),
    ("bar bar-retry", "", "retry delay"),
    ("bar bar-child", "child", "child"),
    ("bar bar-event", "event", "event wait"),
    ("open", "", "still going"),
)
#: The kinds of bar drawn with a texture over their colour (the patterns of the drawing).
TEXTURED = frozenset(texture for _, texture, _ in BAR_KEYS if texture)


@dataclass(slots=True)
class Row:
    y: int
    x: float
    width: float
    label: str
    kind: str
    outcome: str
    open: bool
    title: str
    position: int
    child_id: str = ""
    #: The child's page, on the engine that runs it (filled in by the view); "" for none.
    child_url: str = ""
    count: int = 1
    failed: int = 0

    @property
    def texture(self) -> str:
        """The texture drawn over the bar's colour, "" for none (see ``BAR_KEYS``)."""
        return self.kind if self.kind in TEXTURED else ""

    @property
    def bar_y(self) -> int:
        return self.y + 3

    @property
    def text_y(self) -> int:
        return self.y + 14

    @property
    def end_x(self) -> str:
        return _n(self.x + self.width)

    # Coordinates as text: the template engine would localize floats, slowly.
    @property
    def x_text(self) -> str:
        return _n(self.x)

    @property
    def width_text(self) -> str:
        return _n(self.width)


def _n(value: float) -> str:
    return f"{value:.1f}"


@dataclass
class Layout:
    width: int
    height: int
    label_width: int
    rows: list[Row] = field(default_factory=list)
    #: One SVG path drawing every turn line (hundreds of elements would weigh on the page).
    turn_path: str = ""
    turn_lines: int = 0
    #: (kind, label, event position, path): the path drawn at the marker's moment.
    markers: list[tuple[str, str, int, str]] = field(default_factory=list)
    #: The kinds of marker drawn, for the legend: (kind, what it is called, its shape's path).
    marker_keys: list[tuple[str, str, str]] = field(default_factory=list)
    #: Suspended periods, shaded behind the bars: (x, width, title).
    suspensions: list[tuple[str, str, str]] = field(default_factory=list)
    ticks: list[tuple[str, str, str]] = field(default_factory=list)
    grouped: bool = False
    max_rows: int = MAX_ROWS
    bar_keys: tuple[tuple[str, str, str], ...] = BAR_KEYS
    bar_count: int = 0
    turn_count: int = 0
    empty: bool = True


def human_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def from_page_load(t: datetime | None, now: datetime) -> str:
    """How far ``t`` is from ``now`` (when the page was made): "in 4 s at page load", "4 s ago"
    or "now". The page has no live clock: what is still to come is said as of its load, so a
    page left open is not read as counting down. Empty for no time, or a wait with none."""
    if t is None or t == NEVER:
        return ""
    seconds = (t - now).total_seconds()
    if abs(seconds) < 0.5:
        return "now"
    amount = _to_the_second(abs(seconds))
    return f"in {amount} at page load" if seconds > 0 else f"{amount} ago"


def how_long(since: datetime, now: datetime) -> str:
    """How long from ``since`` to ``now`` (when the page was made), as ``from_page_load`` says
    it: "3 h 5 min", "4 s"."""
    return _to_the_second(max((now - since).total_seconds(), 0.0))


def _to_the_second(seconds: float) -> str:
    whole = round(seconds)  # to the second: the page is as old as it is read
    return f"{whole} s" if whole < 60 else human_duration(whole)


def _title(bar: Bar, end: datetime | None) -> str:
    # Names and ids as ids are shown; an error message or a reason given is the app's text,
    # its control characters shown and its lines kept.
    parts = [f"{bar.kind} {visible_name(bar.label)}"]
    if bar.attempt > 1:
        parts.append(f"attempt {bar.attempt}")
    parts.append(bar.outcome)
    if bar.start and end:
        parts.append(human_duration((end - bar.start).total_seconds()))
    if bar.due and bar.due != NEVER:
        fires = "was to fire " if bar.outcome in ("abandoned", "not read") else "fires "
        parts.append(("timeout " if bar.kind == "event" else fires) + bar.due.isoformat())
    if bar.child_id:
        parts.append(visible_name(bar.child_id))
    if bar.detail:
        parts.append(visible(bar.detail[:300]))
    return " · ".join(parts)


def layout(tl: Timeline, now: datetime) -> Layout:
    out = Layout(width=LABEL_WIDTH + WIDTH + 10, height=TOP + 10, label_width=LABEL_WIDTH)
    out.bar_count = tl.bar_total if tl.groups is not None else len(tl.bars)
    out.turn_count = tl.turn_total if tl.groups is not None else len(tl.turns)
    start = tl.start
    if start is None:
        return out
    end = tl.end if tl.finished and tl.end else now
    ends = [g.last for g in tl.groups] if tl.groups is not None else [b.end for b in tl.bars]
    latest = max((t for t in ends if t and t != NEVER), default=None)
    # A finished run's drawing ends with the run: a summarized run's timers span their last
    # fire time, which for one the run outlived is days after it (and never came).
    if latest and latest > end and not tl.finished:
        end = latest
    span = max((end - start).total_seconds(), 0.001)

    def x_of(t: datetime | None) -> float:
        if t is None:
            return LABEL_WIDTH
        offset = min(max((t - start).total_seconds(), 0.0), span)
        return LABEL_WIDTH + offset / span * WIDTH

    def bar_end(bar: Bar) -> datetime:
        return bar.end if bar.end is not None else end

    out.empty = False
    if tl.groups is None and len(tl.bars) <= MAX_ROWS:
        for i, bar in enumerate(tl.bars):
            x0, x1 = x_of(bar.start), x_of(bar_end(bar))
            label = bar.label or bar.kind
            if bar.attempt > 1:
                label = f"{label} (attempt {bar.attempt})"
            out.rows.append(
                Row(
                    y=TOP + i * ROW_HEIGHT,
                    x=round(x0, 2),
                    width=round(max(x1 - x0, 2.0), 2),
                    label=label,
                    kind=bar.kind,
                    outcome=bar.outcome.replace(" ", "-"),
                    open=bar.is_open,
                    title=_title(bar, bar.end),
                    # A failed attempt's link opens its failure (the error and the stack).
                    position=(
                        bar.end_position
                        if bar.outcome == "failed" and bar.end_position is not None
                        else bar.position
                    ),
                    child_id=bar.child_id,
                )
            )
    else:
        out.grouped = True
        groups = tl.groups if tl.groups is not None else groups_of(tl.bars)
        for i, g in enumerate(groups[:MAX_ROWS]):
            last = end if g.open or g.last is None else min(g.last, end)
            x0, x1 = x_of(g.first), x_of(last)
            title = (
                f"{g.kind} {visible_name(g.label)} · {g.count} bars · {g.failed} failed"
                f" · {g.open} open"
            )
            label = f"{g.label or g.kind} ×{g.count}" + (f", {g.failed} failed" if g.failed else "")
            out.rows.append(
                Row(
                    y=TOP + i * ROW_HEIGHT,
                    x=round(x0, 2),
                    width=round(max(x1 - x0, 2.0), 2),
                    label=label,
                    kind=g.kind,
                    # A few failures among hundreds don't paint the row red: they outline it.
                    outcome="running" if g.open else "completed",
                    open=bool(g.open),
                    title=title,
                    position=g.position,
                    count=g.count,
                    failed=g.failed,
                )
            )
    out.height = TOP + max(len(out.rows), 1) * ROW_HEIGHT + 10
    step = max(1, len(tl.turns) // MAX_TURN_LINES + (1 if len(tl.turns) > MAX_TURN_LINES else 0))
    lines = [f"M{_n(x_of(m.at))} 18V{out.height}" for m in tl.turns[::step] if m.at]
    out.turn_path, out.turn_lines = " ".join(lines), len(lines)
    out.markers = [
        (m.kind, visible_name(m.label), m.position, marker_path(m.kind, x_of(m.at)))
        for m in tl.markers[:MAX_MARKERS]
        if m.at
    ]
    drawn = {kind for kind, *_ in out.markers}
    out.marker_keys = [
        (kind, MARKER_NAMES.get(kind, kind), marker_path(kind, 0, KEY_FOOT))
        for kind in MARKER_SHAPES
        if kind in drawn
    ]
    suspended_at: datetime | None = None
    for m in tl.markers[:MAX_MARKERS]:
        if m.kind == "suspended" and suspended_at is None:
            suspended_at = m.at
        elif m.kind == "resumed" and suspended_at is not None and m.at:
            out.suspensions.append(_suspension(x_of(suspended_at), x_of(m.at), suspended_at, m.at))
            suspended_at = None
    if suspended_at is not None:  # still suspended (or until the run ended)
        out.suspensions.append(_suspension(x_of(suspended_at), x_of(end), suspended_at, None))
    for k in range(5):
        frac = k / 4
        anchor = "end" if k == 4 else "middle"  # the last label would overflow the drawing
        out.ticks.append((_n(LABEL_WIDTH + frac * WIDTH), "+" + _tick(span * frac, span), anchor))
    return out


def marker_path(kind: str, x: float, foot: int = MARKER_FOOT) -> str:
    """The SVG path of a marker of ``kind`` whose point is at ``x``, ``foot``."""
    return f"M{_n(x)} {foot} {MARKER_SHAPES[kind]}"


def _tick(seconds: float, span: float) -> str:
    """A tick's label: in whole milliseconds the ticks of a run of a few ms read
    "+0 ms, +1 ms, +1 ms, +2 ms": below a second, as many decimals as a quarter of the span
    needs to tell them apart."""
    if span >= 1 or seconds >= 1:
        return human_duration(seconds)
    step_ms = span * 1000 / 4
    decimals = 0 if step_ms >= 5 else 1 if step_ms >= 0.5 else 2 if step_ms >= 0.05 else 3
    return f"{seconds * 1000:.{decimals}f} ms"


def _suspension(
    x0: float, x1: float, since: datetime | None, until: datetime | None
) -> tuple[str, str, str]:
    title = "suspended"
    if since and until:
        title += f" for {human_duration((until - since).total_seconds())}"
    elif until is None:
        title += " since " + (since.isoformat() if since else "?")
    return _n(x0), _n(max(x1 - x0, 1.0)), title


def groups_of(bars: list[Bar]) -> list[Group]:
    """Bars grouped by kind and label, in the order of their first bar."""
    groups: dict[tuple[str, str], Group] = {}
    for bar in bars:
        g = groups.get((bar.kind, bar.label))
        if g is None:
            g = groups[(bar.kind, bar.label)] = Group(
                bar.kind, bar.label, 0, bar.start, bar.end, bar.position
            )
        g.count += 1
        g.failed += bar.outcome == "failed"
        g.open += bar.is_open
        if bar.start and (g.first is None or bar.start < g.first):
            g.first = bar.start
        if bar.end and bar.end != NEVER and (g.last is None or bar.end > g.last):
            g.last = bar.end
    return list(groups.values())


def elapsed(start: datetime | None, t: datetime | None) -> str:
    if start is None or t is None:
        return ""
    delta: timedelta = t - start
    sign = "-" if delta.total_seconds() < 0 else "+"
    return sign + human_duration(abs(delta.total_seconds()))
