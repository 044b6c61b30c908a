"""Timeline bars and "waiting on" computed from the real engine's recorded histories."""

from datetime import UTC, datetime, timedelta

from tests.pages import golden_rows
from workflows_ui.history import EventRow, build_timeline, waiting_on


def timeline(name, status="COMPLETED", cut=None):
    rec = golden_rows.load(name)
    history = rec["history"] if cut is None else rec["history"][:cut]
    return build_timeline(golden_rows.rows(history), status)


def test_two_steps_has_two_completed_activity_bars_and_three_turns():
    tl = timeline("two_steps")
    assert [(b.kind, b.label, b.outcome) for b in tl.bars] == [
        ("activity", "reserve_stock", "completed"),
        ("activity", "ship", "completed"),
    ]
    assert all(b.end >= b.start for b in tl.bars)
    assert len(tl.turns) == 3
    assert tl.finished and waiting_on(tl) == []


def test_retries_show_each_failed_attempt_and_the_retry_delays():
    tl = timeline("with_retry")
    activities = [b for b in tl.bars if b.kind == "activity"]
    assert [(b.attempt, b.outcome) for b in activities] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    assert "payment gateway timeout (attempt 1)" in activities[0].detail
    retries = [b for b in tl.bars if b.kind == "retry"]
    assert [b.outcome for b in retries] == ["fired", "fired"]
    # A retry delay ends at its fire time, not at the (creation-time) timestamp of timerFired.
    assert retries[0].end == datetime(2026, 11, 22, 3, 26, 24, 792954, tzinfo=UTC)


def test_an_event_wait_raced_by_a_timer_times_out_when_the_timer_fires():
    tl = timeline("approval_timeout")
    wait = next(b for b in tl.bars if b.kind == "event")
    assert wait.label == "approval"
    assert wait.outcome == "timed out"
    assert wait.due == datetime(2026, 11, 22, 3, 26, 26, 630226, tzinfo=UTC)
    assert not any(b.kind == "timer" and b.due and b.due.year == 9999 for b in tl.bars)


def test_an_event_received_before_the_timeout_ends_the_wait():
    tl = timeline("approval_event_before_wait")
    wait = next(b for b in tl.bars if b.kind == "event")
    assert wait.outcome == "received"
    timer = next(b for b in tl.bars if b.kind == "timer")
    assert timer.outcome == "abandoned"  # the run completed before its 30 s timeout


def test_a_running_approval_waits_for_the_event_with_its_timeout():
    # The recorded history up to the first turn: the event wait and its timeout timer are open.
    tl = timeline("approval_timeout", status="RUNNING", cut=4)
    waits = waiting_on(tl)
    assert [(w.kind, w.label) for w in waits] == [("event", "approval")]
    assert waits[0].until == datetime(2026, 11, 22, 3, 26, 26, 630226, tzinfo=UTC)


def test_a_wait_without_timeout_is_an_event_wait_never_a_timer():
    tl = timeline("terminated", status="RUNNING", cut=3)
    waits = waiting_on(tl)
    assert [(w.kind, w.label, w.until) for w in waits] == [("event", "go", None)]


def test_running_activities_and_children_are_waited_on():
    tl = timeline("fan_out_children", status="RUNNING", cut=4)
    waits = waiting_on(tl)
    assert [(w.kind, w.label, w.child_id) for w in waits] == [
        ("child", "line_item", "g-fan-out:0001"),
        ("child", "line_item", "g-fan-out:0002"),
    ]
    tl = timeline("two_steps", status="RUNNING", cut=3)
    assert [(w.kind, w.label) for w in waiting_on(tl)] == [("activity", "reserve_stock")]


def test_children_bars_link_to_the_children():
    tl = timeline("fan_out_children")
    assert [(b.kind, b.child_id, b.outcome) for b in tl.bars] == [
        ("child", "g-fan-out:0001", "completed"),
        ("child", "g-fan-out:0002", "completed"),
    ]


def test_a_pending_timer_is_waited_on_with_its_fire_time():
    tl = timeline("continue_as_new", status="RUNNING", cut=3)
    waits = waiting_on(tl)
    assert [(w.kind, w.until) for w in waits] == [
        ("timer", datetime(2026, 11, 22, 3, 26, 27, 892704, tzinfo=UTC))
    ]


def test_suspend_and_resume_are_markers_and_the_event_ends_the_wait():
    tl = timeline("suspend_event_resume")
    assert [m.kind for m in tl.markers] == ["suspended", "event", "resumed", "completed"]
    wait = next(b for b in tl.bars if b.kind == "event")
    assert wait.outcome == "received"
    tl = timeline("suspend_event_resume", status="SUSPENDED", cut=5)
    assert tl.suspended


def test_a_terminated_run_leaves_nothing_waiting_and_its_wait_abandoned():
    tl = timeline("terminated", status="TERMINATED")
    assert waiting_on(tl) == []
    assert [(b.kind, b.outcome) for b in tl.bars] == [("event", "abandoned")]
    assert [m.kind for m in tl.markers] == ["terminated", "completed"]


def test_a_failed_activity_carries_its_error():
    tl = timeline("activity_fails", status="FAILED")
    (bar,) = tl.bars
    assert bar.outcome == "failed"
    assert bar.detail == "no carrier serves this address"


def test_events_raised_twice_end_two_waits_in_order():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        EventRow(0, -1, "workflowStarted", timestamp=t0),
        EventRow(1, -1, "executionStarted", "wf", t0),
        EventRow(
            2,
            1,
            "timerCreated",
            "Go",
            t0,
            info="9999-12-31T23:59:59.999999999Z",
            origin="externalEvent",
        ),
        EventRow(
            3,
            2,
            "timerCreated",
            "go",
            t0,
            info="9999-12-31T23:59:59.999999999Z",
            origin="externalEvent",
        ),
        EventRow(4, -1, "workflowStarted", timestamp=t0 + timedelta(seconds=1)),
        EventRow(5, -1, "eventRaised", "GO", t0 + timedelta(seconds=1)),
    ]
    tl = build_timeline(rows, "RUNNING")
    assert [b.outcome for b in tl.bars] == ["received", "waiting"]
    assert [w.label for w in waiting_on(tl)] == ["go"]


def test_waits_and_timers_a_turn_creates_in_different_numbers_are_not_paired_as_races():
    # when_all over three event waits and two timers, all created in one turn: no timer is a
    # wait's timeout, so the first timer firing ends no wait, and the second is still awaited.
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    sentinel = "9999-12-31T23:59:59.999999999Z"
    rows = [
        EventRow(0, -1, "workflowStarted", timestamp=t0),
        EventRow(1, -1, "executionStarted", "gather", t0),
        *[
            EventRow(2 + i, i, "timerCreated", name, t0, info=sentinel, origin="externalEvent")
            for i, name in enumerate(["a", "b", "c"])
        ],
        EventRow(5, 3, "timerCreated", "", t0, info="2026-01-01T00:00:02Z", origin="createTimer"),
        EventRow(6, 4, "timerCreated", "", t0, info="2026-01-02T00:00:00Z", origin="createTimer"),
        EventRow(7, -1, "workflowStarted", timestamp=t0 + timedelta(seconds=2)),
        EventRow(8, -1, "timerFired", timestamp=t0, related_id=3),
    ]
    tl = build_timeline(rows, "RUNNING")
    assert [(b.label, b.outcome) for b in tl.bars if b.kind == "event"] == [
        ("a", "waiting"),
        ("b", "waiting"),
        ("c", "waiting"),
    ]
    assert [(w.kind, w.label) for w in waiting_on(tl)] == [
        ("event", "a"),
        ("event", "b"),
        ("event", "c"),
        ("timer", "timer"),
    ]


def _wait_with_its_own_timeout(*later):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        EventRow(0, -1, "workflowStarted", timestamp=t0),
        EventRow(1, -1, "executionStarted", "renewal", t0),
        # wait_for_external_event with a timeout: the SDK's timer has the event's origin and
        # the timeout as its fire time (without one it is the 9999 sentinel).
        EventRow(
            2,
            1,
            "timerCreated",
            "confirmed",
            t0,
            info="2026-01-08T00:00:00Z",
            origin="externalEvent",
        ),
        *later,
    ]


def test_a_wait_with_a_timeout_of_its_own_is_waited_on_until_then():
    tl = build_timeline(_wait_with_its_own_timeout(), "RUNNING")
    [bar] = tl.bars
    assert (bar.kind, bar.outcome) == ("event", "waiting")
    [wait] = waiting_on(tl)
    assert (wait.kind, wait.label) == ("event", "confirmed")
    assert wait.until == datetime(2026, 1, 8, tzinfo=UTC)


def test_a_wait_with_a_timeout_of_its_own_times_out_when_its_timer_fires():
    t1 = datetime(2026, 1, 8, tzinfo=UTC)
    tl = build_timeline(
        _wait_with_its_own_timeout(
            EventRow(3, -1, "workflowStarted", timestamp=t1),
            EventRow(4, -1, "timerFired", timestamp=t1, related_id=1),
        ),
        "RUNNING",
    )
    [bar] = tl.bars
    assert (bar.outcome, bar.end) == ("timed out", t1)
    assert waiting_on(tl) == []


def test_an_event_before_its_own_timeout_is_received_and_the_late_timer_changes_nothing():
    t1 = datetime(2026, 1, 2, tzinfo=UTC)
    t2 = datetime(2026, 1, 8, tzinfo=UTC)
    tl = build_timeline(
        _wait_with_its_own_timeout(
            EventRow(3, -1, "workflowStarted", timestamp=t1),
            EventRow(4, -1, "eventRaised", "confirmed", t1),
            EventRow(5, -1, "workflowStarted", timestamp=t2),
            EventRow(6, -1, "timerFired", timestamp=t2, related_id=1),
        ),
        "RUNNING",
    )
    [bar] = tl.bars
    assert (bar.outcome, bar.end) == ("received", t1)
    assert waiting_on(tl) == []


def test_a_run_that_continued_as_new_leaves_its_open_bars_not_read_not_abandoned():
    tl = timeline("two_steps", "CONTINUED_AS_NEW", cut=3)  # up to its first taskScheduled
    assert tl.finished and tl.end_unread
    assert [b.outcome for b in tl.bars] == ["not read"]
    # Terminated, its executionCompleted read: what still ran was abandoned.
    history = golden_rows.load("two_steps")["history"][:3]
    end = {
        "eventId": 2,
        "timestamp": history[-1]["timestamp"],
        "executionCompleted": {"workflowStatus": "ORCHESTRATION_STATUS_TERMINATED"},
    }
    terminated = build_timeline(golden_rows.rows([*history, end]), "TERMINATED")
    assert terminated.finished and not terminated.end_unread
    assert [b.outcome for b in terminated.bars] == ["abandoned"]


def test_a_run_that_ended_after_the_history_read_leaves_its_open_bars_not_read():
    # Its history indexed as of an earlier read (the engine's state read, its history too big
    # to be sent): the activity may have completed in the events not read. The history said so
    # of its timers, and the timeline drew the same bars as abandoned.
    for status in ("COMPLETED", "FAILED", "TERMINATED"):
        tl = timeline("two_steps", status, cut=3)
        assert tl.finished and tl.end_unread
        assert [b.outcome for b in tl.bars] == ["not read"]


def test_the_timeline_ticks_of_a_run_of_a_few_milliseconds_read_apart():
    from workflows_ui.timeline import layout

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ms = timedelta(milliseconds=1)
    rows = [
        EventRow(0, -1, "workflowStarted", timestamp=t0),
        EventRow(1, -1, "executionStarted", "quick", t0),
        EventRow(2, 0, "taskScheduled", "step", t0 + ms),
        EventRow(3, -1, "workflowStarted", timestamp=t0 + 2 * ms),
        EventRow(4, -1, "taskCompleted", "step", t0 + 2 * ms, related_id=0),
        EventRow(5, 1, "executionCompleted", timestamp=t0 + 3 * ms),
    ]
    labels = [label for _, label, _ in layout(build_timeline(rows, "COMPLETED"), t0).ticks]
    # In whole milliseconds they were +0, +1, +2, +2, +3 ms.
    assert labels == ["+0.0 ms", "+0.8 ms", "+1.5 ms", "+2.3 ms", "+3.0 ms"]


def test_a_time_is_said_from_the_pages_load_in_seconds_then_minutes_hours_and_days():
    from workflows_ui.history import NEVER
    from workflows_ui.timeline import from_page_load, how_long

    now = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    assert from_page_load(now + timedelta(seconds=4.2), now) == "in 4 s at page load"
    assert from_page_load(now - timedelta(seconds=4.2), now) == "4 s ago"
    assert from_page_load(now + timedelta(milliseconds=300), now) == "now"
    assert from_page_load(now + timedelta(seconds=59.7), now) == "in 1 min 0 s at page load"
    assert from_page_load(now - timedelta(hours=2, minutes=5), now) == "2 h 5 min ago"
    assert from_page_load(now + timedelta(days=3, hours=1), now) == "in 3 d 1 h at page load"
    assert from_page_load(NEVER, now) == "" and from_page_load(None, now) == ""
    assert how_long(now - timedelta(seconds=4.2), now) == "4 s"
    assert how_long(now - timedelta(hours=3, minutes=5, seconds=40), now) == "3 h 5 min"


def test_a_timers_summary_says_how_far_its_fire_time_or_timeout_is():
    from workflows_ui.payloads import event_summary

    now = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    timer = {"fireAt": "2026-11-22T03:00:04.000000500Z", "createTimer": {}}
    assert event_summary("timerCreated", timer, now) == (
        "fires at 2026-11-22T03:00:04.000000500Z (in 4 s at page load)"
    )
    assert event_summary("timerCreated", timer) == "fires at 2026-11-22T03:00:04.000000500Z"
    # A timer its run outlived fires at no time from now.
    assert event_summary("timerCreated", timer, now, "ended") == (
        "was to fire at 2026-11-22T03:00:04.000000500Z; it did not fire: the run ended first"
    )
    # The run's last turn unread: a timer due before the page's time may have fired in it.
    assert event_summary("timerCreated", timer, now, "unread").endswith("the run ended first")
    later = now + timedelta(seconds=5)
    assert event_summary("timerCreated", timer, later, "unread").endswith(
        "; whether it fired is not known: the run's last turn was not read"
    )
    # A wait for an event with a timeout of its own: the timeout, and how far, whatever the
    # length of the event's name.
    wait = {"fireAt": "2026-11-22T02:59:00Z", "externalEvent": {"name": "a" * 300}}
    said = event_summary("timerCreated", wait, now)
    assert said.startswith("waiting for event aaa") and "…" in said
    assert said.endswith(", timeout at 2026-11-22T02:59:00Z (1 min 0 s ago)")
    forever = {"fireAt": "9999-12-31T23:59:59.999999999Z", "externalEvent": {"name": "go"}}
    assert event_summary("timerCreated", forever, now) == "waiting for event go"
