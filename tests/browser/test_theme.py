"""The console's colours in chromium, with the system set to light and to dark: every page keeps
its text readable, and the timeline's markers are in its legend, each with its own shape.

The instances are real: a devengine runs them with Dapr SDK workers (one suspended, resumed
and sent its event, one terminated, one stalled), and the indexer stores them.
"""

from __future__ import annotations

import math
import re
import time
import zlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime
from django.contrib.auth.models import User
from django.utils import timezone

from engine_bridge.client import EngineClient
from engine_bridge.indexer import EngineIndexer, Limits, sync_engines
from tests.console import factories, wf_kinds
from tests.console.support import DevEngine
from workflows_ui.models import Instance, Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ORDER = {"id": "o-2001", "qty": 1, "amount": 12.5}
STATUSES = {
    "t-two": "COMPLETED",
    "t-fails": "FAILED",
    "t-approved": "COMPLETED",
    "t-stopped": "TERMINATED",
    "t-monitor": "COMPLETED",
    "t-timers": "COMPLETED",
    "t-waits": "SUSPENDED",
    "t-stalled": "STALLED",
    "t-retry": "COMPLETED",
    "t-fan": "COMPLETED",
    "t-fan:0001": "COMPLETED",
    "t-fan:0002": "COMPLETED",
}
PASSWORD = "pw-123456789"


def wait_for_status(client: DaprWorkflowClient, iid: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while (state := client.get_workflow_state(iid)) is None or state.runtime_status.name != status:
        assert time.monotonic() < deadline, f"{iid}: {state and state.runtime_status.name}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevEngine]:
    """A devengine whose instances give every page something to colour: a failure, a
    suspension, an event received, a termination, one suspended while it waits, and a bar of
    every kind (retry delays, children)."""
    dev = DevEngine(tmp_path_factory.mktemp("engine") / "engine.sqlite3", "--app-id", "shop")
    dev.start()
    client = DaprWorkflowClient(host="127.0.0.1", port=str(dev.port))
    stall(dev, client, "t-stalled")
    runtime = WorkflowRuntime(host="127.0.0.1", port=str(dev.port))
    wf_kinds.register_all(runtime)
    # The versioned workflow's older version only: the stalled instance stays stalled.
    wf_kinds.register_versions(runtime, ("v1",))
    runtime.start()
    try:
        start = client.schedule_new_workflow
        start(wf_kinds.two_steps, input=ORDER, instance_id="t-two")
        start(wf_kinds.fails, input={"id": "o-2002", "address": "nowhere"}, instance_id="t-fails")
        start(wf_kinds.monitor, input=1, instance_id="t-monitor")
        start(wf_kinds.two_timers, instance_id="t-timers")
        start(wf_kinds.with_retry, input=ORDER, instance_id="t-retry")
        start(wf_kinds.fan_out, input={"id": "o-2003", "qtys": [1, 2]}, instance_id="t-fan")
        start(wf_kinds.approval, input={"timeout": 3600}, instance_id="t-approved")
        start(wf_kinds.wait_forever, instance_id="t-stopped")
        start(wf_kinds.approval, input={"timeout": 3600}, instance_id="t-waits")
        for iid in ("t-approved", "t-stopped", "t-waits"):
            client.wait_for_workflow_start(iid, timeout_in_seconds=30)
        client.pause_workflow("t-approved")
        wait_for_status(client, "t-approved", "SUSPENDED")
        client.resume_workflow("t-approved")
        wait_for_status(client, "t-approved", "RUNNING")
        client.raise_workflow_event("t-approved", "approval", data="alice")
        client.terminate_workflow("t-stopped")
        client.pause_workflow("t-waits")
        for iid, status in STATUSES.items():
            wait_for_status(client, iid, status)
        yield dev
    finally:
        client.close()
        runtime.shutdown()
        dev.stop()


def stall(dev: DevEngine, client: DaprWorkflowClient, iid: str) -> None:
    """An instance written by the versioned workflow's v2, stalled by a worker with v1 only."""
    for versions in (("v1", "v2"), ("v1",)):
        runtime = WorkflowRuntime(host="127.0.0.1", port=str(dev.port))
        wf_kinds.register_versions(runtime, versions)
        runtime.start()
        try:
            if len(versions) == 2:
                client.schedule_new_workflow(wf_kinds.VERSIONED, instance_id=iid)
                client.wait_for_workflow_start(iid, timeout_in_seconds=30)
            else:
                client.raise_workflow_event(iid, "go", data="x")
                wait_for_status(client, iid, "STALLED")
        finally:
            runtime.shutdown()


@pytest.fixture
def indexed(engine: DevEngine) -> Iterator[None]:
    """The indexer's passes until the console's database holds every instance as the engine
    has it, and an engine down beside it, for the banner it puts on the pages."""
    (row,) = sync_engines([engine.config("shop")])
    client = EngineClient(engine.config("shop"), timeout=5.0)
    limits = Limits(concurrency=4, active_interval=0.0, sweep_interval=0.0, sweep_pause_factor=0.0)
    ix = EngineIndexer(row, client, limits)
    deadline = time.monotonic() + 30
    try:
        while True:
            ix.run_pass()
            have = dict(Instance.objects.values_list("instance_id", "status"))
            if have == STATUSES:
                break
            assert time.monotonic() < deadline, f"not indexed: {have}"
            time.sleep(0.1)
        an_earlier_run("t-monitor")
        factories.engine(
            "billing", reachable=False, last_error="connection refused",
            last_error_at=timezone.now(), failing_since=timezone.now() - timedelta(minutes=3),
        )  # fmt: skip
        yield
    finally:
        client.close()


def an_earlier_run(instance_id: str) -> None:
    """A run before the one the engine has (the indexer sees only the runs alive at its passes,
    so it is stored here as the indexer would have)."""
    inst = Instance.objects.get(instance_id=instance_id)
    current = inst.runs.get()
    Run.objects.filter(pk=current.pk).update(ordinal=2)
    Run.objects.create(
        instance=inst, execution_id="earlier", ordinal=1, name=current.name,
        status="CONTINUED_AS_NEW",
    )  # fmt: skip


@pytest.fixture
def site(live_server: Any, indexed: None) -> str:
    User.objects.create_user("alice", password=PASSWORD)
    return str(live_server.url)


def signed_in(browser: Any, site: str, scheme: str) -> Any:
    """A page of a new browser context whose system colour scheme is ``scheme``, signed in."""
    context = browser.new_context(color_scheme=scheme, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(site + "/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    return page


# Every visible element with text of its own, or a placeholder shown, its text colour (an SVG
# text's fill) and the first opaque background behind it (the page's canvas if none is).
TEXT_COLOURS = """() => {
  const opaque = (c) => !/^rgba\\(.*, 0(\\.\\d+)?\\)$/.test(c) && c !== "transparent";
  const canvas = getComputedStyle(document.documentElement).colorScheme === "dark"
    ? "rgb(18, 18, 18)" : "rgb(255, 255, 255)";
  function background(el) {
    for (; el; el = el.parentElement) {
      const c = getComputedStyle(el).backgroundColor;
      if (opaque(c)) return c;
    }
    return canvas;
  }
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    if (["SCRIPT", "STYLE", "TITLE", "OPTION"].includes(el.tagName)) continue;
    const own = [...el.childNodes]
      .filter((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim()).length;
    const hint = el.placeholder && !el.value;  // what a field takes ("exact name")
    if (!own && !hint) continue;
    const box = el.getBoundingClientRect();
    if (box.width <= 1 || box.height <= 1 || !el.checkVisibility({visibilityProperty: true})) {
      continue;  // not shown, or read by screen readers only
    }
    if (hint) {
      out.push({
        text: el.placeholder.slice(0, 40), tag: el.tagName.toLowerCase() + "::placeholder",
        colour: getComputedStyle(el, "::placeholder").color, background: background(el),
      });
      continue;
    }
    const style = getComputedStyle(el);
    const colour = el instanceof SVGElement ? style.fill : style.color;
    out.push({
      text: el.textContent.trim().slice(0, 40),
      tag: el.tagName.toLowerCase() + (el.className && el.className.baseVal === undefined
        ? "." + el.className.trim().replace(/\\s+/g, ".") : ""),
      colour, background: background(el),
    });
  }
  return out;
}"""


def luminance(colour: str) -> float:
    r, g, b = (float(v) / 255 for v in re.findall(r"[\d.]+", colour)[:3])
    lin = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    """WCAG's contrast ratio of two CSS colours written as rgb(r, g, b)."""
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def low_contrast(page: Any) -> list[str]:
    """The page's texts below 4.5:1 against their background, one line each."""
    return [
        f"{page.url}: {t['tag']} {t['text']!r} {t['colour']} on {t['background']}"
        f" ({contrast(t['colour'], t['background']):.2f}:1)"
        for t in page.evaluate(TEXT_COLOURS)
        if contrast(t["colour"], t["background"]) < 4.5
    ]


def scheme_of(page: Any) -> float:
    """The luminance of the page's own background (0 black, 1 white)."""
    return luminance(page.evaluate("() => getComputedStyle(document.body).backgroundColor"))


# Each page of the console, and what it has that the others don't.
PAGES = [
    "/instances/",  # filters, counts, badges, the banner of the engine down
    "/instances/?status=FAILED&q=nowhere",  # chips selected
    "/instances/shop/t-approved/",  # timeline with markers and a suspended period, history
    "/instances/shop/t-fails/",  # the failure, the stack trace
    "/instances/shop/t-waits/",  # suspended (its banner), a wait still open
    "/instances/shop/t-monitor/",  # its runs, the current one marked
    "/instances/shop/t-approved/runs/1/events/3/",  # the selected event
    "/instances/shop/t-approved/runs/1/history/",
    "/instances/shop/t-two/payload/input/",
    "/",  # the engines, their health
    "/instances/shop/nothing-here/",  # 404
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_keeps_its_text_readable_in_the_systems_colour_scheme(
    browser: Any, site: str, scheme: str
) -> None:
    context = browser.new_context(color_scheme=scheme, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(site + "/login/")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "wrong")
        page.click("button[type=submit]")
        page.locator("#login-error").wait_for()
        offenders = low_contrast(page)
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/$"))
        for path in PAGES:
            page.goto(site + path)
            # The dark scheme applied, not a white page that happens to pass.
            if scheme == "dark":
                assert scheme_of(page) < 0.05, path
            else:
                assert scheme_of(page) > 0.9, path
            offenders += low_contrast(page)
            if path == "/instances/":
                assert page.locator(".banner-warn").count() == 1
        assert offenders == [], "\n".join(offenders)
    finally:
        context.close()


# The timeline's bars and markers (and the legend's keys), each with its fill, or its outline
# where a light fill relies on it, the background of the drawing it is on, and the fill and
# opacity of a suspended period's shading it is drawn over (null for none).
GRAPHICS = """() => {
  const spans = [...document.querySelectorAll("svg.timeline .suspended-span")];
  const over = (a, b) => a.x < b.x + b.width && b.x < a.x + a.width
    && a.y < b.y + b.height && b.y < a.y + a.height;
  return [...document.querySelectorAll(
    "svg.timeline .bar, svg.timeline .marker, svg.timeline .open-end, svg.marker-key .marker")]
  .filter((el) => getComputedStyle(el).opacity === "1")  // faded on purpose: what was not used
  .map((el) => {
    const style = getComputedStyle(el);
    let box = el.closest("svg").parentElement;
    while (getComputedStyle(box).backgroundColor === "rgba(0, 0, 0, 0)") box = box.parentElement;
    const span = el.closest("svg.timeline") && spans.find((s) => over(el.getBBox(), s.getBBox()));
    return {
      what: el.getAttribute("class"),
      colour: el.classList.contains("bar-retry") ? style.stroke : style.fill,
      background: getComputedStyle(box).backgroundColor,
      shading: span ? [getComputedStyle(span).fill, +getComputedStyle(span).opacity] : null,
    };
  });
}"""


def colour_difference(a: str, b: str) -> float:
    """CIE76's difference of two CSS rgb() colours, in lightness and hue: about 2 is just seen,
    10 clearly. A pale tint on white shows by its hue, which WCAG's contrast leaves out."""
    return math.dist(lab(a), lab(b))


def lab(colour: str) -> tuple[float, float, float]:
    """A CSS rgb() colour in CIELAB (D65 white)."""
    r, g, b = (float(v) / 255 for v in re.findall(r"[\d.]+", colour)[:3])
    r, g, b = (v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in (r, g, b))
    xyz = (
        (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047,
        0.2126 * r + 0.7152 * g + 0.0722 * b,
        (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883,
    )
    x, y, z = (t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in xyz)
    return 116 * y - 16, 500 * (x - y), 200 * (y - z)


def painted(colour: str, opacity: float, background: str) -> str:
    """The colour seen of ``colour`` at ``opacity`` over ``background`` (CSS rgb() colours)."""
    fg, bg = ([float(v) for v in re.findall(r"[\d.]+", c)[:3]] for c in (colour, background))
    r, g, b = (round(opacity * f + (1 - opacity) * b) for f, b in zip(fg, bg, strict=True))
    return f"rgb({r}, {g}, {b})"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_timelines_bars_and_markers_stand_out_from_its_background(
    browser: Any, site: str, scheme: str
) -> None:
    page = signed_in(browser, site, scheme)
    try:
        faint, shaded = [], 0
        for iid in ("t-approved", "t-fails", "t-stopped", "t-waits"):
            page.goto(f"{site}/instances/shop/{iid}/")
            drawn = page.evaluate(GRAPHICS)
            assert len(drawn) >= 2, iid
            for g in drawn:
                grounds = [g["background"]]
                # Over a suspended period's shading too, toned down for it: its amber drew the
                # eye from the bars, and in the light an event wait's was 2.9:1 over it. (Under
                # that amber, 3.2:1 on white, a shading is 1.06:1 at most: seen by its hue.)
                if g["shading"]:
                    shading = painted(*g["shading"], g["background"])
                    assert colour_difference(shading, g["background"]) >= 10, "not seen"
                    grounds.append(shading)
                    shaded += 1
                faint += [
                    f"{iid}: {g['what']} {g['colour']} on {ground}"
                    f" ({contrast(g['colour'], ground):.2f}:1)"
                    for ground in grounds
                    if contrast(g["colour"], ground) < 3
                ]
        assert faint == [], "\n".join(faint)
        assert shaded, "no bar or marker over a suspended period"
    finally:
        page.context.close()


# Only a suspended period's shading left on the drawing, and the middle of the widest one and of
# the legend's key (the drawing before its name), where the window shows them.
SHADING_AND_KEY = """() => {
  for (const el of document.querySelectorAll("svg.timeline > :not(.suspended-span, defs)")) {
    el.style.setProperty("visibility", "hidden");
  }
  const middle = (el) => {
    el.scrollIntoView({block: "center"});
    const box = el.getBoundingClientRect();
    return [Math.floor(box.x + box.width / 2), Math.floor(box.y + box.height / 2)];
  };
  const widest = [...document.querySelectorAll("svg.timeline .suspended-span")]
    .sort((a, b) => b.getBBox().width - a.getBBox().width)[0];
  const name = [...document.querySelector("#timeline .legend").childNodes]
    .find((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim() === "time suspended");
  return [middle(widest), middle(name.previousSibling)];
}"""


def pixel(page: Any, x: int, y: int) -> tuple[int, ...]:
    """The colour chromium paints at the window's point (x, y)."""
    png = page.screenshot(clip={"x": x, "y": y, "width": 1, "height": 1})
    chunks, at = [], 8
    while at < len(png):
        size, kind = int.from_bytes(png[at : at + 4], "big"), png[at + 4 : at + 8]
        if kind == b"IDAT":
            chunks.append(png[at + 8 : at + 8 + size])
        at += 12 + size
    # One pixel: whatever its row's filter, it leaves the pixel's bytes as they are.
    return tuple(zlib.decompress(b"".join(chunks))[1:4])


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_legends_key_of_a_suspended_period_looks_as_its_shading_does(
    browser: Any, site: str, scheme: str
) -> None:
    # The key was painted at the shading's full colour, the drawing at .45 of it: brighter.
    page = signed_in(browser, site, scheme)
    try:
        page.goto(f"{site}/instances/shop/t-waits/")
        shading_at, key_at = page.evaluate(SHADING_AND_KEY)
        shading, key = pixel(page, *shading_at), pixel(page, *key_at)
        assert shading != (255, 255, 255) and shading[0] > shading[2], shading  # amber, seen
        assert max(abs(a - b) for a, b in zip(shading, key, strict=True)) <= 3, (shading, key)
    finally:
        page.context.close()


def legend_keys(page: Any) -> dict[str, tuple[str, str]]:
    """The legend's markers: kind, and what each is called and its shape (its path from its
    point), in the legend's order."""
    keys = page.evaluate(
        """() => [...document.querySelectorAll("#timeline .legend svg.marker-key")].map((svg) =>
            [svg.querySelector("path").getAttribute("class"), svg.nextSibling.textContent.trim(),
             svg.querySelector("path").getAttribute("d")])"""
    )
    return {kind_of(classes): (name, shape(d)) for classes, name, d in keys}


def kind_of(classes: str) -> str:
    return classes.split("marker-")[1]


def shape(d: str) -> str:
    """A marker's path without the point it is drawn at."""
    return re.sub(r"^M\S+ \S+ ", "", d)


# The boxes the timeline's markers, time labels and bars take on the drawing: [x0, y0, x1, y1].
BOXES = """() => {
  const box = (el) => { const b = el.getBBox(); return [b.x, b.y, b.x + b.width, b.y + b.height]; };
  const all = (selector) => [...document.querySelectorAll(selector)];
  return {
    markers: all("svg.timeline .marker").map((m) => [m.getAttribute("class"), box(m)]),
    labels: all("svg.timeline .tick-label").map((t) => [t.textContent, box(t)]),
    bars: all("svg.timeline .bar").map((b) => [b.getAttribute("class"), box(b)]),
    width: document.querySelector("svg.timeline").viewBox.baseVal.width,
  };
}"""


def overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_the_timelines_markers_are_drawn_whole_clear_of_its_time_labels_and_bars(
    browser: Any, site: str
) -> None:
    # A completed run's dot is at the drawing's very end, where its last time label ends too.
    page = signed_in(browser, site, "light")
    try:
        for iid in ("t-approved", "t-two", "t-stopped", "t-stalled"):
            page.goto(f"{site}/instances/shop/{iid}/")
            drawn = page.evaluate(BOXES)
            assert drawn["markers"], iid
            for marker, m in drawn["markers"]:
                assert m[1] >= 0 and m[2] <= drawn["width"], (iid, marker, m)
                for what, other in drawn["labels"] + drawn["bars"]:
                    assert not overlap(m, other), (iid, marker, m, what, other)
    finally:
        page.context.close()


def test_the_legend_shows_the_runs_markers_each_in_a_shape_of_its_own(
    browser: Any, site: str
) -> None:
    page = signed_in(browser, site, "light")
    try:
        page.goto(f"{site}/instances/shop/t-approved/")
        keys = legend_keys(page)
        assert [name for name, _ in keys.values()] == [
            "event received", "suspended", "resumed", "completed"
        ]  # fmt: skip
        # Each marker drawn has the shape of its kind's key.
        drawn = page.evaluate(
            """() => [...document.querySelectorAll("svg.timeline .marker")].map((m) =>
                [m.getAttribute("class"), m.getAttribute("d")])"""
        )
        assert sorted(kind_of(classes) for classes, _ in drawn) == sorted(keys)
        for classes, d in drawn:
            assert shape(d) == keys[kind_of(classes)][1], (classes, d)

        # Told apart without their colours: all painted alike, no two keys look the same.
        page.evaluate(
            """() => document.querySelectorAll("svg.marker-key .marker")
                .forEach((m) => { m.style.fill = "black"; })"""
        )
        images = [k.screenshot() for k in page.locator("#timeline svg.marker-key").all()]
        assert len(images) == 4 and len(set(images)) == 4, "two keys look alike in one colour"

        page.goto(f"{site}/instances/shop/t-stopped/")
        assert "terminated" in legend_keys(page)
        assert "suspended" not in legend_keys(page)  # only what the run has
        page.goto(f"{site}/instances/shop/t-two/")
        assert list(legend_keys(page)) == ["completed"]
    finally:
        page.context.close()


# Each kind's own fill set to one colour: what is left to tell the kinds apart.
ONE_COLOUR = """() => {
  for (const name of ["--bar", "--bar-timer", "--bar-retry", "--bar-child", "--bar-event",
                      "--bar-failed"]) {
    document.documentElement.style.setProperty(name, "#3b82f6");
  }
}"""

# The legend's key of each bar kind: the drawing just before its name.
MARK_BAR_KEYS = """() => {
  for (const n of document.querySelector("#timeline .legend").childNodes) {
    const name = n.nodeType === Node.TEXT_NODE && n.textContent.trim();
    if (name && n.previousSibling) n.previousSibling.dataset.keyOf = name;
  }
}"""

# A copy of a bar (its link's drawing, 20 units wide) or of a legend key, alone at the window's
# top left: where it is drawn, a fraction of a pixel apart, two alike would be painted apart.
# A bar is moved there with all it draws from its corner, as the drawing has it.
ALONE = """([selector, isBar, nth]) => {
  const el = document.querySelectorAll(selector)[nth];
  document.getElementById("alone")?.remove();
  const box = document.createElement("div");
  box.id = "alone";
  const style = {position: "fixed", left: "0", top: "0", padding: "3px", margin: "0",
                 background: "var(--surface)", "z-index": "10"};
  for (const [name, value] of Object.entries(style)) box.style.setProperty(name, value);
  let copy;
  if (isBar) {
    copy = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    copy.setAttribute("class", "timeline");
    copy.setAttribute("width", "24");
    copy.setAttribute("height", "18");
    const link = el.closest("a").cloneNode(true);
    for (const rect of link.querySelectorAll("rect")) rect.setAttribute("width", "20");
    const moved = document.createElementNS("http://www.w3.org/2000/svg", "g");
    const [x, y] = [el.x.baseVal.value, el.y.baseVal.value];
    moved.setAttribute("transform", `translate(${2 - x} ${2 - y})`);
    moved.append(link);
    copy.append(moved);
  } else {
    copy = document.createElement("span");
    copy.className = "legend";
    copy.style.setProperty("margin", "0");
    const key = el.cloneNode(true);
    key.style.setProperty("margin", "0");
    copy.append(key);
  }
  box.append(copy);
  document.body.append(box);
}"""

# A bar of each kind, and where: kind, instance, the bar (finished, not faded).
BARS = [
    ("activity", "t-two", '.bar[data-kind="activity"][data-outcome="completed"]'),
    ("failed", "t-fails", '.bar[data-kind="activity"][data-outcome="failed"]'),
    ("timer", "t-monitor", '.bar[data-kind="timer"][data-outcome="fired"]'),
    ("retry delay", "t-retry", '.bar[data-kind="retry"]'),
    ("child", "t-fan", '.bar[data-kind="child"][data-outcome="completed"]'),
    ("event wait", "t-approved", '.bar[data-kind="event"][data-outcome="received"]'),
]


def alone(page: Any, selector: str, *, bar: bool, nth: int = 0) -> bytes:
    """A picture of the ``nth`` element ``selector`` finds, on its own (see ``ALONE``)."""
    page.evaluate(ALONE, [selector, bar, nth])
    return bytes(page.locator("#alone").screenshot())


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_each_kind_of_bar_and_its_legend_key_is_told_apart_without_its_colour(
    browser: Any, site: str, scheme: str
) -> None:
    # An activity's bar and a child's were blue and violet and nothing else: alike to a reader
    # who can't tell those hues apart.
    page = signed_in(browser, site, scheme)
    try:
        page.goto(f"{site}/instances/shop/t-approved/")
        page.evaluate(ONE_COLOUR)
        page.evaluate(MARK_BAR_KEYS)
        names = [kind for kind, *_ in BARS] + ["still going"]
        keys = {name: alone(page, f'[data-key-of="{name}"]', bar=False) for name in names}
        alike = [(a, b) for a in keys for b in keys if a < b and keys[a] == keys[b]]
        assert alike == [], "legend keys alike in one colour"

        bars = {}
        for kind, iid, selector in BARS:
            page.goto(f"{site}/instances/shop/{iid}/")
            page.evaluate(ONE_COLOUR)
            bars[kind] = alone(page, f"svg.timeline {selector}", bar=True)
        alike = [(a, b) for a in bars for b in bars if a < b and bars[a] == bars[b]]
        assert alike == [], "bars alike in one colour"
    finally:
        page.context.close()


# Two bars of a textured kind, each in its own row and starting at its own time.
TWO_OF_A_KIND = [
    ("t-timers", '.bar[data-kind="timer"]'),
    ("t-fan", '.bar[data-kind="child"]'),
]


def test_a_kinds_texture_starts_alike_at_the_start_of_each_of_its_bars(
    browser: Any, site: str
) -> None:
    # Laid from the drawing's corner, a timer's hatching met each bar's start where it happened
    # to be: two timers looked cut apart differently.
    page = signed_in(browser, site, "light")
    try:
        for iid, selector in TWO_OF_A_KIND:
            page.goto(f"{site}/instances/shop/{iid}/")
            bars = page.locator(f"svg.timeline {selector}")
            corners = bars.evaluate_all(
                "(bars) => bars.map((b) => [b.x.baseVal.value, b.y.baseVal.value])"
            )
            assert len(corners) == 2 and corners[0][0] != corners[1][0], (iid, corners)
            first, second = (
                alone(page, f"svg.timeline {selector}", bar=True, nth=n) for n in (0, 1)
            )
            assert first == second, f"{iid}: the texture starts differently on its two bars"
    finally:
        page.context.close()
