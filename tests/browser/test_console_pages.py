"""A person using the console in chromium: log in, filter, open an instance, read its timeline
and what it waits on, go to a child and back, open an event's link.

The instances are real: a devengine runs them with a Dapr SDK worker, and the indexer stores
them in the database the live server reads.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime
from django.contrib.auth.models import User

from engine_bridge.client import EngineClient
from engine_bridge.indexer import EngineIndexer, Limits, sync_engines
from tests.console import factories, wf_kinds
from tests.console.support import DevEngine
from workflows_ui import listing
from workflows_ui.models import Instance

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ORDER = {"id": "o-1001", "qty": 2, "amount": 59.9}
FINISHED = {
    "b-two": "COMPLETED",
    "b-fails": "FAILED",
    "b-retry": "COMPLETED",
    "b-fan": "COMPLETED",
    "b-fan:0001": "COMPLETED",
    "b-fan:0002": "COMPLETED",
}
RUNNING = {"b-approval": "RUNNING", "b-forever": "RUNNING"}
PASSWORD = "pw-123456789"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevEngine]:
    """A devengine on which a worker has run every kind of workflow the pages show, two of
    them left waiting (an approval with a one-hour timeout, and an event with none)."""
    dev = DevEngine(tmp_path_factory.mktemp("engine") / "engine.sqlite3", "--app-id", "shop")
    dev.start()
    runtime = WorkflowRuntime(host="127.0.0.1", port=str(dev.port))
    wf_kinds.register_all(runtime)
    runtime.start()
    client = DaprWorkflowClient(host="127.0.0.1", port=str(dev.port))
    try:
        start = client.schedule_new_workflow
        start(wf_kinds.two_steps, input=ORDER, instance_id="b-two")
        start(wf_kinds.fails, input={"id": "o-1003", "address": "nowhere"}, instance_id="b-fails")
        start(wf_kinds.with_retry, input=ORDER, instance_id="b-retry")
        start(wf_kinds.fan_out, input={"id": "o-1002", "qtys": [1, 2]}, instance_id="b-fan")
        start(wf_kinds.approval, input={"timeout": 3600}, instance_id="b-approval")
        start(wf_kinds.wait_forever, instance_id="b-forever")
        for iid in ("b-two", "b-fails", "b-retry", "b-fan"):
            client.wait_for_workflow_completion(iid, timeout_in_seconds=30)
        for iid in RUNNING:
            client.wait_for_workflow_start(iid, timeout_in_seconds=30)
        yield dev
    finally:
        client.close()
        runtime.shutdown()
        dev.stop()


@pytest.fixture
def indexed(engine: DevEngine) -> Iterator[None]:
    """The indexer's passes until the console's database holds every instance as the engine
    has it (each test starts from an empty database)."""
    (row,) = sync_engines([engine.config("shop")])
    client = EngineClient(engine.config("shop"), timeout=5.0)
    limits = Limits(concurrency=4, active_interval=0.0, sweep_interval=0.0, sweep_pause_factor=0.0)
    ix = EngineIndexer(row, client, limits)
    want = {**FINISHED, **RUNNING}
    deadline = time.monotonic() + 30
    try:
        while True:
            ix.run_pass()
            have = dict(Instance.objects.values_list("instance_id", "status"))
            waiting = Instance.objects.filter(instance_id="b-approval").first()
            if have == want and waiting and waiting.runs.get().event_count >= 4:
                break
            assert time.monotonic() < deadline, f"not indexed: {have}"
            time.sleep(0.1)
        yield
    finally:
        client.close()


def sign_in(page: Any, url: str) -> Any:
    """Open ``url`` as a new user, through the login page it sends to."""
    User.objects.create_user("alice", password=PASSWORD)
    page.goto(url)
    assert "/login/" in page.url
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(re.compile(re.escape(url) + "$"))
    return page


@contextmanager
def signed_in_los_angeles(browser: Any, url: str) -> Iterator[Any]:
    """A page signed in at ``url`` in a browser whose time zone is Los Angeles (UTC-8 or -7:
    the day differs from UTC's in the evening), closed afterwards."""
    context = browser.new_context(timezone_id="America/Los_Angeles")
    try:
        yield sign_in(context.new_page(), url)
    finally:
        context.close()


@pytest.fixture
def signed_in(page: Any, live_server: Any, indexed: None) -> Any:
    return sign_in(page, live_server.url + "/instances/")


def listed_ids(page: Any) -> list[str]:
    return page.locator("tr.instance-row td.mono a").all_inner_texts()


def wait_for_list(page: Any, expected: list[str]) -> None:
    """Until the list shows exactly ``expected`` (each step of a test expects a list different
    from the one before it, so a step can't pass on the previous step's results)."""
    page.wait_for_function(
        """(want) => {
            const ids = [...document.querySelectorAll('tr.instance-row td.mono a')]
                .map(a => a.textContent).sort();
            return !document.querySelector('.htmx-request')
                && JSON.stringify(ids) === JSON.stringify(want);
        }""",
        arg=sorted(expected),
    )


def test_a_person_logs_in_and_filters_by_status_then_by_text(signed_in: Any) -> None:
    page = signed_in
    wait_for_list(page, [*FINISHED, *RUNNING])

    page.check("input[name=status][value=RUNNING]")
    wait_for_list(page, ["b-approval", "b-forever"])
    assert "status=RUNNING" in page.url  # the filter is in the address, to be shared
    # ... and only what was chosen: no empty fields, no defaults.
    assert not re.search(r"[?&](name|id_prefix|q|created_after|purged|sort)=", page.url), page.url
    page.check("input[name=status][value=FAILED]")
    wait_for_list(page, ["b-approval", "b-forever", "b-fails"])
    page.uncheck("input[name=status][value=RUNNING]")
    wait_for_list(page, ["b-fails"])

    page.fill("input[name=q]", "o-1001")
    page.locator("text=No instance matches these filters").wait_for()
    assert listed_ids(page) == []
    page.uncheck("input[name=status][value=FAILED]")
    wait_for_list(page, ["b-retry", "b-two"])
    page.fill("input[name=q]", "carrier")
    wait_for_list(page, ["b-fails"])
    page.wait_for_url(re.compile(r"[?&]q=carrier"))

    # The shared address shows the same list to whoever opens it.
    page.goto(page.url)
    assert listed_ids(page) == ["b-fails"]
    assert page.input_value("input[name=q]") == "carrier"


def test_an_instance_shows_its_timeline_bars_and_what_it_waits_on(signed_in: Any) -> None:
    page = signed_in
    page.click("text=b-approval")
    page.wait_for_url(re.compile(r"/instances/shop/b-approval/$"))
    waiting = page.locator("#waiting li.wait")
    assert waiting.count() == 1
    text = waiting.inner_text()
    assert "Event approval" in text and "timeout at" in text
    bars = page.locator("#timeline svg rect.bar")
    assert bars.count() >= 1
    assert page.locator('#timeline rect.bar[data-kind="event"].open').count() == 1

    page.goto(signed_in.url.replace("b-approval", "b-retry"))
    assert page.locator("#waiting").inner_text().count("finished") == 1
    activity = page.locator('#timeline rect.bar[data-kind="activity"]')
    assert activity.count() == 3
    assert page.locator('#timeline rect.bar[data-outcome="failed"]').count() == 2
    assert page.locator("#timeline path.turn").count() == 1


def test_the_keyboard_reads_each_timeline_bar_as_a_mouse_does(signed_in: Any) -> None:
    # A bar's details (its outcome, duration, event) were its tooltip only, which shows on
    # hover: tabbing through the drawing showed a focus ring around a bar and nothing else.
    page = signed_in
    page.goto(page.url.replace("/instances/", "/instances/shop/b-retry/"))
    readout = page.locator("#timeline-readout")
    page.locator("#timeline a.skip").focus()
    said: list[str] = []
    for _ in range(20):
        page.keyboard.press("Tab")
        title = page.evaluate(
            "() => document.activeElement.closest('svg.timeline')"
            " ? document.activeElement.querySelector('title').textContent : null"
        )
        if title is None:
            break
        assert readout.is_visible()
        assert readout.inner_text() == title
        said.append(title)
    assert sum("activity" in t and "failed" in t for t in said) == 2, said
    # Out of the drawing, the line is empty again.
    assert page.evaluate("() => document.activeElement.id") == "history-type"
    assert readout.inner_text() == ""


def test_a_person_goes_to_a_child_and_back_to_the_parent(signed_in: Any) -> None:
    page = signed_in
    page.goto(page.url + "?id_prefix=b-fan")
    page.click("tr.instance-row >> text=/^b-fan$/")
    page.wait_for_url(re.compile(r"/instances/shop/b-fan/$"))
    assert page.locator("#children a.child-link").count() == 2
    page.click("#children a.child-link >> text=b-fan:0001")
    page.wait_for_url(re.compile(r"/instances/shop/b-fan:0001/$"))
    assert page.locator("h1").inner_text().startswith("b-fan:0001")
    page.click("#parent-link")
    page.wait_for_url(re.compile(r"/instances/shop/b-fan/$"))
    page.go_back()
    page.wait_for_url(re.compile(r"/instances/shop/b-fan:0001/$"))


def test_an_events_link_opens_the_page_at_that_event(signed_in: Any) -> None:
    page = signed_in
    page.goto(page.url.replace("/instances/", "/instances/shop/b-retry/"))
    link = page.locator("#event-5 a.permalink")
    href = link.get_attribute("href")
    assert href and href.endswith("/runs/1/events/5/#event-5")
    link.click()
    page.wait_for_url(re.compile(r"/events/5/#event-5$"))
    assert "selected" in (page.locator("#event-5").get_attribute("class") or "")
    assert page.locator("#selected-event").is_visible()
    assert page.locator("#event-5").is_visible()

    # The history's type filter (htmx) keeps to events of that type.
    page.select_option("#history select[name=type]", "taskFailed")
    # A function, not an expression: Playwright polls an expression with eval, which the
    # console's Content-Security-Policy refuses once the first check has failed.
    page.wait_for_function("() => document.querySelectorAll('#history tr.event-row').length === 2")
    assert page.locator("#history tr.type-taskFailed").count() == 2


def contrast(a: str, b: str) -> float:
    """WCAG's contrast ratio of two CSS colours written as rgb(r, g, b)."""

    def luminance(colour: str) -> float:
        r, g, b = (int(v) / 255 for v in re.findall(r"\d+", colour)[:3])
        lin = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_event_a_page_is_about_is_marked_by_more_than_a_faint_background(
    signed_in: Any,
) -> None:
    # Its row differed from the others by a background of 1.03:1 against white, all but
    # invisible; a bar at its start now stands out (3:1 at least, WCAG's for such marks).
    page = signed_in
    page.goto(page.url.replace("/instances/", "/instances/shop/b-retry/runs/1/events/5/"))
    cell = page.locator("#event-5 > td").first
    shadow = cell.evaluate("(td) => getComputedStyle(td).boxShadow")
    background = cell.evaluate("(td) => getComputedStyle(td).backgroundColor")
    bar = re.match(r"rgb\([^)]*\) (\d+)px", shadow)
    assert bar and int(bar.group(1)) >= 3 and "inset" in shadow, shadow
    assert contrast(bar.group(0), background) >= 3, (shadow, background)
    # The other rows have none.
    other = page.locator("#event-4 > td").first
    assert other.evaluate("(td) => getComputedStyle(td).boxShadow") == "none"


def test_back_to_a_filtered_history_shows_the_whole_instance_page(signed_in: Any) -> None:
    # The type filter pushes the history's own address, which answers htmx with the history
    # alone: without Vary the browser kept that answer and Back showed it bare.
    page = signed_in
    page.goto(page.url.replace("/instances/", "/instances/shop/b-retry/"))
    page.select_option("#history select[name=type]", "taskFailed")
    page.wait_for_function("() => document.querySelectorAll('#history tr.event-row').length === 2")
    page.wait_for_url(re.compile(r"type=taskFailed"))
    page.goto(page.url.split("/instances/")[0] + "/instances/")
    page.go_back()
    page.wait_for_url(re.compile(r"type=taskFailed"))
    page.wait_for_function("() => document.querySelectorAll('#history tr.event-row').length === 2")
    assert page.locator("h1").count() == 1 and page.locator("link[rel=stylesheet]").count() >= 1
    assert page.locator("#history tr.type-taskFailed").count() == 2


def test_the_list_and_an_instance_page_fit_a_1024_pixel_window(signed_in: Any) -> None:
    from workflows_ui.models import HistoryEvent

    started = HistoryEvent.objects.get(
        run__instance__instance_id="b-retry", event_type="executionStarted"
    )
    # A long unbroken payload in a history row's details.
    started.details = {**started.details, "input": '"' + "x" * 3000 + '"'}
    started.save(update_fields=["details"])
    page = signed_in
    page.set_viewport_size({"width": 1024, "height": 800})
    for path in ("/instances/", "/instances/shop/b-retry/"):
        page.goto(page.url.split("/instances/")[0] + path)
        # The timeline scrolls in its own box; nothing else may widen the page.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1024, f"{path}: {width}px wide"


def test_the_created_filters_caption_reads_on_one_line(signed_in: Any) -> None:
    # The labels stack their parts in a column: the caption split into "Created from (",
    # "UTC" and ")" on three lines.
    page = signed_in
    page.goto(page.url.split("/instances/")[0] + "/instances/")
    label = page.locator("label:has(input[name=created_after])")
    spread = label.evaluate(
        "el => { const r = document.createRange(); r.setStartBefore(el.firstChild);"
        " r.setEndBefore(el.querySelector('input'));"
        " const text = [...r.getClientRects()].filter(b => b.width > 1);"
        " const tops = text.map(b => b.top); return Math.max(...tops) - Math.min(...tops); }"
    )
    assert label.inner_text().startswith("Created from (UTC)")
    assert spread < 8, f"the caption's parts are {spread}px apart vertically: not one line"


def test_back_and_forward_through_filtered_lists_show_each_list(signed_in: Any) -> None:
    page = signed_in
    wait_for_list(page, [*FINISHED, *RUNNING])
    page.check("input[name=status][value=RUNNING]")
    wait_for_list(page, ["b-approval", "b-forever"])
    page.check("input[name=status][value=FAILED]")
    wait_for_list(page, ["b-approval", "b-forever", "b-fails"])
    page.go_back()
    wait_for_list(page, ["b-approval", "b-forever"])
    page.go_back()
    wait_for_list(page, [*FINISHED, *RUNNING])
    page.go_forward()
    wait_for_list(page, ["b-approval", "b-forever"])
    assert page.is_checked("input[name=status][value=RUNNING]")
    assert not page.is_checked("input[name=status][value=FAILED]")
    # (The page fixture fails the test on any script or Content-Security-Policy error.)


def test_back_from_an_instance_returns_to_the_whole_filtered_list(signed_in: Any) -> None:
    # The filtered list's address was pushed by an in-page request that got only the results;
    # the browser kept that answer for the address and showed it alone, without page or style.
    page = signed_in
    wait_for_list(page, [*FINISHED, *RUNNING])
    page.check("input[name=status][value=FAILED]")
    wait_for_list(page, ["b-fails"])
    page.click("tr.instance-row td.mono a")
    page.wait_for_url(re.compile(r"/instances/shop/b-fails/$"))
    page.go_back()
    wait_for_list(page, ["b-fails"])
    assert page.locator("form#filters").count() == 1
    assert page.is_checked("input[name=status][value=FAILED]")
    assert page.title().startswith("Instances")


def test_the_next_page_is_shown_from_its_top(
    signed_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pager is under the rows: the next page was swapped in with the window left at its
    # bottom, its first rows out of sight.
    monkeypatch.setattr(listing, "PAGE_SIZE", 4)
    page = signed_in
    page.set_viewport_size({"width": 1400, "height": 150})
    page.reload()
    first_page = listed_ids(page)
    assert len(first_page) == 4
    next_link = page.locator("#results-next")
    next_link.scroll_into_view_if_needed()
    assert _top_of_results(page) < 0
    next_link.click()
    page.wait_for_url(re.compile(r"[?&]cursor="))
    wait_for_list(page, [i for i in [*FINISHED, *RUNNING] if i not in first_page])
    # (Scrolled once the new rows have settled, a moment after they are in.)
    page.wait_for_function("() => !document.querySelector('.htmx-swapping, .htmx-settling')")
    assert 0 <= _top_of_results(page) < 5


def announced(page: Any, text: str) -> None:
    """Until the page's live region says ``text``."""
    page.wait_for_function(
        "(want) => document.getElementById('announce').textContent === want", arg=text
    )


@pytest.fixture
def pages_of_four(signed_in: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str]]:
    """The list four instances a page, at its first: the page, and the ids it lists."""
    monkeypatch.setattr(listing, "PAGE_SIZE", 4)
    signed_in.reload()
    return signed_in, listed_ids(signed_in)


def test_a_previous_page_goes_back_a_page_and_says_where_it_is(
    pages_of_four: tuple[Any, list[str]],
) -> None:
    page, first_page = pages_of_four
    assert page.locator("#results-previous").count() == 0
    assert page.inner_text(".pager .position") == "1–4 of 8"
    page.click("#results-next")
    wait_for_list(page, [i for i in [*FINISHED, *RUNNING] if i not in first_page])
    assert page.inner_text(".pager .position") == "5–8 of 8"
    # A screen reader is told where in the list the new page is, not only the list's count,
    # which was the same words for every page.
    announced(page, "8 instances, 5–8 of 8")
    page.locator("#results-previous").press("Enter")
    wait_for_list(page, first_page)
    assert listed_ids(page) == first_page  # in the list's order
    assert page.inner_text(".pager .position") == "1–4 of 8"
    assert page.locator("#results-previous").count() == 0
    announced(page, "8 instances, 1–4 of 8")
    # A list on one page: its count alone.
    page.check("input[name=status][value=FAILED]")
    wait_for_list(page, ["b-fails"])
    announced(page, "1 instance")


def test_a_next_page_whose_instances_were_all_purged_says_so(
    pages_of_four: tuple[Any, list[str]],
) -> None:
    # Its sentence was not a summary the live region reads: a screen reader heard the list's
    # count alone, as if the next page had come in.
    page, first_page = pages_of_four
    Instance.objects.exclude(instance_id__in=first_page).update(purged=True)
    page.click("#results-next")
    page.locator("#results p.empty").wait_for()
    assert listed_ids(page) == []
    gone = "No instance is on this page any more: those it listed were purged or deleted since."
    assert page.inner_text("#results p.empty").startswith(gone)
    # After the list's count (from the counts the indexer keeps, which this purge, written
    # straight to the table, leaves as they were): the sentence, and not the link's text.
    page.wait_for_function(
        "(want) => document.getElementById('announce').textContent.endsWith(want)", arg=gone
    )


def test_the_name_filter_offers_the_names_that_start_with_what_is_typed(
    signed_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "NAMES_OFFERED", 2)
    page = signed_in
    page.reload()

    def offered() -> list[str]:
        return page.eval_on_selector_all("#workflow-names option", "os => os.map(o => o.value)")

    assert offered() == ["approval", "fails"]
    page.locator("input[name=name]").press_sequentially("w")
    page.wait_for_function(
        "() => document.querySelectorAll('#workflow-names option').length === 2"
        " && document.querySelector('#workflow-names option').value.startsWith('w')"
    )
    assert offered() == ["wait_forever", "with_retry"]
    assert "name=" not in page.url  # typing fetches names; the list changes on a choice
    page.fill("input[name=name]", "with_retry")
    page.press("input[name=name]", "Enter")
    wait_for_list(page, ["b-retry"])


def test_a_400_pixel_window_keeps_each_instances_id_and_status_in_view(signed_in: Any) -> None:
    page = signed_in
    # An id with nowhere to break (a browser breaks a line after a hyphen).
    Instance.objects.filter(instance_id="b-two").update(instance_id="b_two_" + "0123456789" * 4)
    page.set_viewport_size({"width": 400, "height": 800})
    page.reload()
    assert page.locator("thead th", has_text="Engine").count() == 0  # one engine
    boxes = page.eval_on_selector_all(
        "tr.instance-row",
        """rows => rows.map(r => [r.querySelector('td.mono a'), r.querySelector('.status')]
            .map(el => el.getBoundingClientRect().right))""",
    )
    assert len(boxes) == 8
    for id_right, status_right in boxes:
        assert id_right <= 400 and status_right <= 400, boxes
    assert page.evaluate("document.documentElement.scrollWidth") <= 400


def _top_of_results(page: Any) -> float:
    """Where the results start, from the window's top edge (negative: scrolled past)."""
    return float(page.evaluate("document.getElementById('results').getBoundingClientRect().top"))


def test_times_switch_between_utc_and_the_browsers_time_zone(
    browser: Any, live_server: Any, indexed: None
) -> None:
    from zoneinfo import ZoneInfo

    with signed_in_los_angeles(browser, live_server.url + "/instances/shop/b-two/") as page:
        created = Instance.objects.get(instance_id="b-two").created_at
        utc_text = created.strftime("%Y-%m-%d %H:%M:%S.%f")
        local_text = created.astimezone(ZoneInfo("America/Los_Angeles")).strftime(
            "%Y-%m-%d %H:%M:%S.%f"
        )
        cell = page.locator("dt:text('Created') + dd time")
        assert cell.inner_text() == utc_text
        assert page.inner_text("#tz-toggle") == "Times: UTC"

        page.click("#tz-toggle")
        assert cell.inner_text() == local_text
        assert page.inner_text("#tz-toggle") == "Times: America/Los_Angeles"
        assert "America/Los_Angeles" in page.inner_text("#as-of")
        page.reload()  # the choice is kept
        assert page.locator("dt:text('Created') + dd time").inner_text() == local_text
        page.click("#tz-toggle")
        assert page.locator("dt:text('Created') + dd time").inner_text() == utc_text


def test_a_history_time_on_another_day_in_the_browsers_zone_shows_its_date(
    browser: Any, live_server: Any, indexed: None
) -> None:
    """The history shows a time of day alone when it is on the run's first day in UTC; in the
    browser's zone it may be the next day, which must not go unsaid."""
    from datetime import UTC, datetime

    from workflows_ui.models import HistoryEvent

    events = HistoryEvent.objects.filter(run__instance__instance_id="b-two")
    # 06:00 UTC is 22:00 the day before in Los Angeles; 09:00 UTC is 01:00 there.
    events.update(timestamp=datetime(2026, 3, 2, 6, 0, tzinfo=UTC))
    last = events.order_by("-position").first()
    assert last is not None
    events.filter(pk=last.pk).update(timestamp=datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    with signed_in_los_angeles(browser, live_server.url + "/instances/shop/b-two/") as page:
        cell = page.locator(f"#event-{last.position} td:nth-child(5) time")
        assert cell.inner_text() == "09:00:00.000000"  # in UTC, the run's first day
        page.click("#tz-toggle")
        assert cell.inner_text() == "2026-03-02 01:00:00.000000"
        first = page.locator("#history tbody tr").first.locator("td:nth-child(5) time")
        assert first.inner_text() == "22:00:00.000000"


def test_the_created_filter_takes_times_in_the_zone_the_switch_shows(
    browser: Any, live_server: Any, indexed: None
) -> None:
    """Times typed in the browser's zone are filtered as that zone's times; the address keeps
    UTC, so a shared link lists the same instances for everyone."""
    from datetime import UTC, datetime

    Instance.objects.update(created_at=datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    # 02:00 in Los Angeles (UTC-8 until 8 March).
    Instance.objects.filter(instance_id="b-two").update(
        created_at=datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    )
    with signed_in_los_angeles(browser, live_server.url + "/instances/") as page:
        page.click("#tz-toggle")
        assert "America/Los_Angeles" in page.inner_text("label:has(input[name=created_after])")

        page.fill("input[name=created_after]", "2026-03-01T01:30")
        page.fill("input[name=created_before]", "2026-03-01T02:30")
        wait_for_list(page, ["b-two"])  # in UTC, 01:30 to 02:30 would list none
        page.wait_for_url(re.compile(r"created_before=2026-03-01T10%3A30"))
        assert "created_after=2026-03-01T09%3A30" in page.url

        page.reload()  # the server writes UTC; the inputs show it in the chosen zone again
        assert listed_ids(page) == ["b-two"]
        assert page.input_value("input[name=created_after]") == "2026-03-01T01:30"
        page.click("#tz-toggle")
        assert page.input_value("input[name=created_after]") == "2026-03-01T09:30"
        assert page.input_value("input[name=created_before]") == "2026-03-01T10:30"
        page.fill("input[name=created_before]", "2026-03-01T09:45")
        wait_for_list(page, [])  # now typed in UTC
        page.wait_for_url(re.compile(r"created_before=2026-03-01T09%3A45"))


def test_an_id_that_reorders_its_text_is_shown_written_out_and_opens_its_own_page(
    page: Any, live_server: Any
) -> None:
    """A right-to-left override makes "refund-\u202e0009" read "refund-9000", another
    instance's id ("Trojan Source"): the list and the page write it out, and its link, the
    id prefix filter and the copy button take it as it is."""
    spoof = "refund-\u202e0009"
    factories.instance(instance_id="refund-9000", name="refund")
    factories.instance(instance_id=spoof, name="spoof", status="FAILED")
    sign_in(page, live_server.url + "/instances/")
    assert sorted(listed_ids(page)) == ["refund-9000", "refund-\\u202e0009"]

    page.fill("input[name=id_prefix]", "refund-\u202e")
    wait_for_list(page, ["refund-\\u202e0009"])
    page.click("tr.instance-row a")
    page.wait_for_url(re.compile(r"/instances/orders/refund-%E2%80%AE0009/$"))
    assert page.inner_text("#instance-id") == "refund-\\u202e0009"
    assert page.inner_text("#status") == "Failed"
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.click("button[data-copy=instance-id]")
    page.locator("button[data-copy=instance-id]", has_text="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == spoof


def test_a_created_time_of_a_link_with_seconds_leaves_the_filters_working(
    browser: Any, live_server: Any
) -> None:
    """The time of a link is its input's step base (a minute by default): a whole minute typed
    there, or the time moved to the browser's zone, failed the browser's step check, and no
    filter sent a request any more, without a word."""
    from datetime import timedelta

    t0 = factories.T0
    factories.instance(instance_id="a", created_at=t0)
    factories.instance(instance_id="b", created_at=t0 + timedelta(minutes=20))
    factories.instance(instance_id="r", status="RUNNING", created_at=t0 - timedelta(minutes=1))
    with signed_in_los_angeles(browser, live_server.url + "/instances/") as page:
        page.goto(f"{live_server.url}/instances/?created_before=2026-11-22T03:00:15")
        assert sorted(listed_ids(page)) == ["a", "r"]
        page.fill("input[name=created_before]", "2026-11-22T03:30")
        wait_for_list(page, ["a", "b", "r"])
        page.wait_for_url(re.compile(r"created_before=2026-11-22T03%3A30(&|$)"))
        page.goto(f"{live_server.url}/instances/?created_before=2026-11-22T03:00:00.5")
        page.click("#tz-toggle")  # in the browser's zone, the fraction is not shown
        page.check("input[name=status][value=RUNNING]")
        wait_for_list(page, ["r"])


def test_a_created_time_of_a_link_to_the_microsecond_stays_when_another_filter_changes(
    browser: Any, live_server: Any
) -> None:
    """The input holds milliseconds at most, and no fraction in the browser's zone: while it
    still shows the link's time, the time is sent as the link gave it, so an instance created
    within the digits cut off is not dropped at the next change of another filter."""
    from datetime import timedelta

    t0 = factories.T0
    factories.instance(instance_id="a", created_at=t0 + timedelta(microseconds=123_400))
    factories.instance(instance_id="b", created_at=t0 + timedelta(microseconds=123_500))
    factories.instance(instance_id="r", status="RUNNING", created_at=t0)
    bound = "created_before=2026-11-22T03%3A00%3A00.123456"
    with signed_in_los_angeles(browser, live_server.url + "/instances/") as page:
        page.goto(f"{live_server.url}/instances/?{bound}")
        assert sorted(listed_ids(page)) == ["a", "r"]
        assert page.input_value("input[name=created_before]") == "2026-11-22T03:00:00.123"
        page.check("input[name=status][value=COMPLETED]")
        wait_for_list(page, ["a"])  # sent as the input has it (...00.123), "a" was dropped
        assert bound in page.url
        page.click("#tz-toggle")  # in the browser's zone: no fraction shown
        assert page.input_value("input[name=created_before]").startswith("2026-11-21T19:00")
        page.check("input[name=status][value=RUNNING]")
        wait_for_list(page, ["a", "r"])
        assert bound in page.url
        # A time typed is the person's, in the zone shown.
        page.fill("input[name=created_before]", "2026-11-21T20:00")
        wait_for_list(page, ["a", "b", "r"])
        page.wait_for_url(re.compile(r"created_before=2026-11-22T04%3A00(&|$)"))


def test_a_created_time_whose_milliseconds_end_in_zero_stays_to_the_microsecond(
    browser: Any, live_server: Any
) -> None:
    """The browser keeps the input's "00.500" as "00.5": still the time the page showed, sent
    to the microsecond as the link gave it when another filter changes."""
    from datetime import timedelta

    t0 = factories.T0
    factories.instance(instance_id="a", created_at=t0 + timedelta(microseconds=500_050))
    factories.instance(instance_id="c", created_at=t0 + timedelta(microseconds=400_000))
    factories.instance(instance_id="r", status="RUNNING", created_at=t0)
    bound = "created_before=2026-11-22T03%3A00%3A00.500123"
    with signed_in_los_angeles(browser, live_server.url + "/instances/") as page:
        page.goto(f"{live_server.url}/instances/?{bound}")
        assert sorted(listed_ids(page)) == ["a", "c", "r"]
        page.check("input[name=status][value=COMPLETED]")
        wait_for_list(page, ["a", "c"])
        assert bound in page.url


def test_a_created_time_typed_stays_when_the_zone_is_switched_then_another_filter_changes(
    browser: Any, live_server: Any
) -> None:
    """A time the person typed over the link's is theirs: switching the zone moves it, and the
    next change of another filter sends it, not the link's time it replaced."""
    from datetime import timedelta

    t0 = factories.T0
    factories.instance(instance_id="a", created_at=t0)
    factories.instance(instance_id="b", created_at=t0 + timedelta(minutes=20))
    factories.instance(instance_id="r", status="RUNNING", created_at=t0 + timedelta(minutes=40))
    with signed_in_los_angeles(browser, live_server.url + "/instances/") as page:
        page.goto(f"{live_server.url}/instances/?created_before=2026-11-22T03:10:00.5")
        assert sorted(listed_ids(page)) == ["a"]
        page.fill("input[name=created_before]", "2026-11-22T03:50")
        wait_for_list(page, ["a", "b", "r"])
        page.click("#tz-toggle")
        page.click("#tz-toggle")
        page.check("input[name=status][value=COMPLETED]")
        wait_for_list(page, ["a", "b"])
        page.wait_for_url(re.compile(r"created_before=2026-11-22T03%3A50(&|$)"))


def test_a_keyboard_and_screen_reader_user_filters_and_pages(signed_in: Any) -> None:
    page = signed_in
    wait_for_list(page, [*FINISHED, *RUNNING])
    # A new list is said in the page's live region, with the chosen chip marked as such.
    page.check("input[name=status][value=RUNNING]")
    wait_for_list(page, ["b-approval", "b-forever"])
    page.wait_for_function(
        "() => document.getElementById('announce').textContent === '2 instances'"
    )
    assert page.get_attribute("a.chip[data-status=RUNNING]", "aria-current") == "true"
    assert page.get_attribute("#results", "aria-busy") is None

    # The history's type filter, with the keyboard: each change keeps the focus on it (it was
    # swapped with the history and left the focus on the page's body, at its top).
    page.goto(page.url.split("/instances/")[0] + "/instances/shop/b-retry/")
    page.locator("#history-type").focus()
    focused = "() => document.activeElement && document.activeElement.id === 'history-type'"
    idle = "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"
    for _ in range(2):
        page.wait_for_function(idle)
        page.wait_for_function(focused)
        before = page.url
        page.keyboard.press("ArrowDown")
        page.wait_for_function("(u) => location.href !== u", arg=before)
        page.wait_for_function(idle)
        page.wait_for_function(focused)
    assert "type=" in page.url
    page.wait_for_function(
        "() => document.getElementById('announce').textContent.startsWith('History')"
    )


def test_the_keyboard_skips_the_filters_to_the_results(signed_in: Any) -> None:
    # The first result was some thirty Tab presses past the top bar (each time field takes
    # six), and a screen reader had no heading or landmark to jump to between filters and rows.
    page = signed_in
    wait_for_list(page, [*FINISHED, *RUNNING])
    page.locator("button", has_text="Log out").focus()
    page.keyboard.press("Tab")
    skip = page.locator("a.skip")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip the filters"
    assert skip.bounding_box()["width"] > 20  # shown once reached
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.closest('#results') !== null")
    assert page.evaluate("() => document.activeElement.dataset.status") == "RUNNING"
    assert 'region "Results"' in page.locator("main").aria_snapshot()


def test_enter_in_a_text_filter_asks_for_the_list_once(signed_in: Any) -> None:
    # Enter there fires the field's "search" and the form's "change" and "submit": three
    # requests for the same list, two of them aborted (htmx logs each abort as an error).
    page = signed_in
    wait_for_list(page, [*FINISHED, *RUNNING])
    asked: list[str] = []
    aborted: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "id_prefix=" in r.url else None)
    page.on("console", lambda m: aborted.append(m.text) if "sendAbort" in m.text else None)

    page.locator("input[name=id_prefix]").click()
    page.keyboard.type("b-f")
    page.keyboard.press("Enter")
    wait_for_list(page, ["b-fails", "b-fan", "b-fan:0001", "b-fan:0002", "b-forever"])
    page.wait_for_timeout(800)  # past the field's own delay, for a request it would add

    assert len(asked) == 1, asked
    assert aborted == []
    assert "id_prefix=b-f" in page.url


def test_a_failed_sign_in_is_said_with_the_fields(page: Any, live_server: Any) -> None:
    page.goto(live_server.url + "/login/")
    page.fill("#id_username", "nobody")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    alert = page.locator("#login-error[role=alert]")
    alert.wait_for()
    assert "correct username and password" in alert.inner_text()
    for field in ("#id_username", "#id_password"):
        assert page.get_attribute(field, "aria-invalid") == "true"
        assert page.get_attribute(field, "aria-describedby") == "login-error"


def test_pages_reflow_in_a_640_pixel_window(signed_in: Any) -> None:
    # 200% zoom on a 1280-pixel screen: wide tables scroll in their own box, not the page.
    page = signed_in
    page.set_viewport_size({"width": 640, "height": 800})
    for path in ("/", "/instances/", "/instances/shop/b-retry/"):
        page.goto(page.url.split("/instances/")[0].rstrip("/") + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 640, f"{path}: {width}px wide"


def forty_five_earlier_runs() -> None:
    """An eternal workflow's earlier runs: 45 before the one the engine runs now (46). The
    indexer sees only the runs alive at its passes, so they are stored here as it would have."""
    from workflows_ui.models import Run

    forever = Instance.objects.get(instance_id="b-forever")
    current = forever.runs.get()
    Run.objects.filter(pk=current.pk).update(ordinal=46)
    Run.objects.bulk_create(
        Run(
            instance=forever,
            execution_id=f"earlier-{n:02d}",
            ordinal=n,
            name=current.name,
            status="CONTINUED_AS_NEW",
        )
        for n in range(1, 46)
    )


def test_a_person_pages_through_the_runs_and_opens_one_by_its_execution_id(
    signed_in: Any,
) -> None:
    forty_five_earlier_runs()
    page = signed_in
    base = page.url.split("/instances/")[0] + "/instances/shop/b-forever/"
    page.goto(base)
    ordinals = "#runs tr.run-row td:first-child a"
    assert page.locator(ordinals).all_inner_texts()[:2] == ["46", "45"]
    assert page.locator("#runs tr.run-row[aria-current=page] .tag").inner_text() == "current"
    assert page.locator("#runs-position").inner_text() == "Page 1 of 3, newest first"

    # Older runs come in place of the table alone (the rest of the page stays as it was), at a
    # URL of their own.
    page.evaluate("() => { document.getElementById('timeline').dataset.kept = 'yes'; }")
    page.click("#runs-older")
    page.wait_for_url(re.compile(r"/b-forever/\?runs_page=2$"))
    page.wait_for_function(
        "() => document.getElementById('runs-position').textContent.startsWith('Page 2')"
    )
    assert page.locator(ordinals).all_inner_texts()[0] == "26"
    assert page.get_attribute("#timeline", "data-kept") == "yes"
    page.wait_for_function(
        "() => document.getElementById('announce').textContent === 'Runs 26 to 7, page 2 of 3.'"
    )
    page.reload()
    assert page.locator(ordinals).all_inner_texts()[0] == "26"

    # An execution id pasted in the form opens that run, its row shown marked on its page.
    page.fill("#run-lookup-id", " earlier-03 ")
    page.click("#run-lookup button[type=submit]")
    page.wait_for_url(re.compile(r"/b-forever/runs/3/$"))
    assert page.locator("#runs tr.run-row[aria-current=page] a").inner_text() == "3"
    assert page.locator("#runs-position").inner_text() == "Page 3 of 3, newest first"
    # Its link to share names the run by that id, and opens it again.
    link = page.get_attribute("#run-link", "href")
    assert link == "/instances/shop/b-forever/?run=earlier-03"
    page.goto(page.url.split("/instances/")[0] + link)
    page.wait_for_url(re.compile(r"/b-forever/runs/3/$"))


def at(path_end: str, **query: str) -> Any:
    """A test of a page's address: its path ends with ``path_end`` and its query is ``query``,
    in any order."""

    def test(url: str) -> bool:
        parts = urlsplit(url)
        return parts.path.endswith(path_end) and dict(parse_qsl(parts.query, True)) == query

    return test


def test_the_runs_page_and_the_history_filter_each_survive_the_others_change_and_a_reload(
    signed_in: Any,
) -> None:
    forty_five_earlier_runs()
    page = signed_in
    base = page.url.split("/instances/")[0] + "/instances/shop/b-forever/"
    page.goto(base)
    position = "#runs-position"
    page.click("#runs-older")
    page.wait_for_url(at("/b-forever/", runs_page="2"))
    # The type filter pushes the history's address with the runs page in it.
    page.select_option("#history-type", "executionStarted")
    page.wait_for_url(at("/runs/46/history/", type="executionStarted", runs_page="2"))
    page.wait_for_function("() => document.querySelectorAll('#history tr.event-row').length === 1")
    # The runs pager, drawn before the filter changed, pushes the filter as it is now.
    page.click("#runs-oldest")
    page.wait_for_url(at("/b-forever/", runs_page="3", type="executionStarted"))
    page.wait_for_function(
        "() => document.getElementById('runs-position').textContent.startsWith('Page 3')"
    )
    page.reload()
    assert page.locator(position).inner_text() == "Page 3 of 3, newest first"
    assert page.locator("#history-type").input_value() == "executionStarted"
    assert page.locator("#history tr.event-row").count() == 1
    # And back to all the types: the runs page stays.
    page.select_option("#history-type", "")
    page.wait_for_url(at("/runs/46/history/", runs_page="3"))
    page.reload()
    assert page.locator(position).inner_text() == "Page 3 of 3, newest first"
    assert page.locator("#history tr.event-row").count() > 1


def test_the_instance_and_execution_ids_copy_or_are_selected_where_copying_is_not_allowed(
    signed_in: Any, browser: Any, live_server: Any, settings: Any
) -> None:
    # On localhost the page is a secure context: the clipboard API copies.
    page = signed_in
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(page.url.replace("/instances/", "/instances/shop/b-retry/"))
    execution_id = Instance.objects.get(instance_id="b-retry").current_execution_id
    copy_instance = page.locator("button[data-copy=instance-id]")
    copy_instance.click()
    page.wait_for_function("() => document.getElementById('announce').textContent === 'Copied'")
    assert copy_instance.inner_text() == "Copied"
    assert page.evaluate("() => navigator.clipboard.readText()") == "b-retry"
    # A second copy is said again: the live region is cleared before "Copied" is written, or
    # a screen reader takes the same text for no change.
    page.evaluate(
        """() => {
          const live = document.getElementById('announce');
          window.said = [];
          new MutationObserver(() => window.said.push(live.textContent))
            .observe(live, {childList: true, characterData: true, subtree: true});
        }"""
    )
    page.click("button[data-copy=execution-id]")
    page.wait_for_function(
        "(id) => navigator.clipboard.readText().then((text) => text === id)", arg=execution_id
    )
    page.wait_for_function("() => window.said.at(-1) === 'Copied'")
    assert page.evaluate("() => window.said") == ["", "Copied"]

    # Over plain HTTP under another name it is not: the text is selected instead, to copy by
    # the keyboard.
    port = live_server.url.rsplit(":", 1)[1]
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "console.example"]
    plain = browser.browser_type.launch(
        executable_path=shutil.which("chromium"),
        args=[
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--host-resolver-rules=MAP console.example 127.0.0.1",
        ],
    )
    try:
        other = plain.new_page()
        errors: list[str] = []
        other.on("pageerror", lambda exc: errors.append(str(exc)))
        # (Chromium notes on each page that it ignores the Cross-Origin-Opener-Policy of an
        # origin that is not trustworthy: what the test asks for.)
        coop = "The Cross-Origin-Opener-Policy header has been ignored"
        other.on(
            "console",
            lambda m: (
                errors.append(m.text) if m.type == "error" and not m.text.startswith(coop) else None
            ),
        )
        url = f"http://console.example:{port}/instances/shop/b-retry/"
        other.goto(url)
        other.fill("input[name=username]", "alice")
        other.fill("input[name=password]", PASSWORD)
        other.click("button[type=submit], input[type=submit]")
        other.wait_for_url(url)
        assert other.evaluate("() => window.isSecureContext") is False
        other.click("button[data-copy=execution-id]")
        other.wait_for_function(
            "() => document.getElementById('announce').textContent.startsWith('Selected')"
        )
        assert other.evaluate("() => window.getSelection().toString()") == execution_id
        assert (
            other.locator("button[data-copy=execution-id]")
            .inner_text()
            .startswith("Selected: press Ctrl+C")
        )
        other.click("button[data-copy=instance-id]")
        other.wait_for_function("() => window.getSelection().toString() === 'b-retry'")
        assert errors == []
    finally:
        plain.close()


def test_the_instance_heading_is_read_as_its_id_and_status_beside_its_copy_button(
    signed_in: Any,
) -> None:
    # The copy button was inside the heading: a screen reader read it as "b-retry Copy the
    # instance id Completed", in a list of headings too.
    page = signed_in
    page.goto(page.url.replace("/instances/", "/instances/shop/b-retry/"))
    heading = page.get_by_role("heading", level=1)
    assert heading.aria_snapshot() == '- heading "b-retry Completed" [level=1]'
    copy = page.get_by_role("button", name="Copy the instance id", exact=True)
    assert copy.is_visible()
    # Still beside the id, on the heading's line.
    assert abs(copy.bounding_box()["y"] - heading.bounding_box()["y"]) < 20


def link_names(snapshot: str) -> list[str]:
    """The names of the links in an accessibility snapshot, in order."""
    return re.findall(r'^ *- link "([^"]*)"', snapshot, re.MULTILINE)


def test_the_history_and_runs_links_say_what_they_open(signed_in: Any) -> None:
    # They were their numbers only, as the tables show them ("4", "1" for "→1"): in a screen
    # reader's list of the page's links, dozens of bare numbers.
    forty_five_earlier_runs()
    page = signed_in
    base = page.url.split("/instances/")[0]
    page.goto(base + "/instances/shop/b-retry/")
    names = link_names(page.locator("#history table").aria_snapshot())
    assert names[:6] == [
        "Event 0",
        "Event 1",
        "Event 2",
        "Event 3",
        "Event 4",
        # taskFailed answers the taskScheduled of event id 1: event 2.
        "Event 2 (event id 1), answered by event 4",
    ], names
    assert not [n for n in names if re.fullmatch(r"\d+", n)], names
    # What the table shows is as it was.
    row = page.locator("#event-4")
    assert row.locator("a.permalink").inner_text() == "4"
    assert row.locator("a.answered").inner_text() == "1"
    assert row.locator("a.answered").get_attribute("href").endswith("/events/2/#event-2")

    page.goto(base + "/instances/shop/b-forever/")
    names = link_names(page.locator("#runs table").aria_snapshot())
    assert names[:2] == ["Run 46", "Run 45"], names
    assert page.locator("#runs tr.run-row a").first.inner_text() == "46"


def test_the_times_switch_says_what_the_times_are_now(
    browser: Any, live_server: Any, indexed: None
) -> None:
    # It changed its own label only: a screen reader said nothing once it was pressed.
    with signed_in_los_angeles(browser, live_server.url + "/instances/shop/b-two/") as page:
        switch = page.locator("#tz-toggle")
        switch.press("Enter")
        announced(page, "Times are now in America/Los_Angeles")
        switch.press("Enter")
        announced(page, "Times are now in UTC")
        assert page.evaluate("() => document.activeElement.id") == "tz-toggle"


def test_each_table_is_named_for_screen_readers(signed_in: Any) -> None:
    # No table had a caption: a screen reader's list of tables read "table" four times over.
    forty_five_earlier_runs()
    page = signed_in
    base = page.url.split("/instances/")[0]
    for path, names in (
        ("/", ["Engines"]),
        ("/instances/", ["Workflow instances"]),
        ("/instances/shop/b-forever/", ["Runs, newest first", "History of this run"]),
    ):
        page.goto(base + path)
        tables = page.get_by_role("table").all()
        said = [t.aria_snapshot().splitlines()[0] for t in tables]
        assert said == [f'- table "{n}":' for n in names], (path, said)
        # A heading shows what each is: its caption is for screen readers only.
        for caption in page.locator("caption").all():
            box = caption.bounding_box()
            assert box is None or box["height"] <= 1, (path, box)
    # The history swapped in by its filter keeps its name.
    page.select_option("#history-type", "timerCreated")
    page.wait_for_function("() => document.querySelectorAll('#history tr.event-row').length === 1")
    assert page.locator("#history table").aria_snapshot().splitlines()[0] == (
        '- table "History of this run, timerCreated events":'
    )
