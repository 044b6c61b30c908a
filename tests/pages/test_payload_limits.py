"""Payloads the user's code can make awkward: lone surrogates, deep nesting, JSON whose indented
form is huge, long failure messages, and event details missing what they usually hold."""

import json
from datetime import timedelta

import pytest

from engine_bridge.types import EVENT_TYPES
from tests.console import factories
from workflows_ui import payloads
from workflows_ui.models import HistoryEvent, Instance
from workflows_ui.views import instance_url

pytestmark = pytest.mark.django_db

#: A JSON text that is 990 arrays deep (about 2 KB).
DEEP = "[" * 990 + "]" * 990
#: 51.6 KB of JSON whose indented form would be some 41 MB (25,000 lines 800 levels deep).
WIDE_AND_DEEP = "[" * 800 + ",".join(["1"] * 25000) + "]" * 800


def _instance(**fields) -> tuple[Instance, str]:
    for key in ("input", "output", "custom_status"):
        if key in fields:
            fields.setdefault(f"{key}_size", len(fields[key]))
    inst = factories.instance(**fields)
    return inst, instance_url(inst.engine.name, inst.instance_id)


def _get(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


# --- lone surrogates ------------------------------------------------------------------------------


def test_json_with_lone_surrogate_escapes_renders_with_them_kept_escaped(logged_in):
    _, url = _instance(
        input='"\\ud800"',
        output='{"k":"a\\udfffb", "ok": "Z\\u00fcrich \\ud83d\\ude00"}',
        custom_status='["\\udc00\\ud800"]',
    )
    body = _get(logged_in, url)
    assert "&quot;\\ud800&quot;" in body
    assert "&quot;a\\udfffb&quot;" in body
    # Other characters are shown as themselves, a pair of surrogates as the one it makes.
    assert "Zürich 😀" in body
    assert "&quot;\\udc00\\ud800&quot;" in body
    assert "&quot;\\ud800&quot;" in _get(logged_in, url + "payload/input/")
    assert "&quot;a\\udfffb&quot;" in _get(logged_in, url + "payload/output/")
    assert "\\udc00\\ud800" in _get(logged_in, url + "payload/custom_status/")


def test_pretty_keeps_lone_surrogates_escaped_in_parsed_json_too():
    text, cut = payloads.pretty({"input": "a\ud800b", "n": ["\udfff"]}, None)
    assert not cut
    text.encode()
    assert json.loads(text) == {"input": "a\ud800b", "n": ["\udfff"]}
    assert "a\\ud800b" in text


# --- control characters --------------------------------------------------------------------------

#: Characters a page shows nothing of (or moves the text around): an escape sequence that colours a
#: terminal, a bell, a form feed, a C1 "next line", a right-to-left override and isolate.
HIDDEN = "\x1b\x07\x0c\x85\u202e\u2066"


def _shows_none_of_them(body: str) -> None:
    assert [c for c in HIDDEN if c in body] == []


def test_control_characters_in_payloads_are_shown_as_escapes_with_the_layout_kept(logged_in):
    stack = 'Traceback:\n\tFile "w.py", line 3\r\n\x1b[31mValueError\x1b[0m\n'
    _, url = _instance(
        status="FAILED",
        input=json.dumps({"file": "cod\u202etxt.exe", "line": "a\x85b"}, ensure_ascii=False),
        custom_status="ready\x0c",
        failure_type="ValueError",
        failure_message="bad \x1b[1mvalue\x07",
        failure_stack_trace=stack,
    )
    body = _get(logged_in, url)
    _shows_none_of_them(body)
    # JSON still: each written as its JSON escape, which is the same value.
    assert "&quot;cod\\u202etxt.exe&quot;" in body and "&quot;a\\u0085b&quot;" in body
    assert "ready\\u000c" in body
    assert "bad \\u001b[1mvalue\\u0007" in body
    # Tabs and line breaks lay the stack trace out as before.
    assert (
        "Traceback:\n\tFile &quot;w.py&quot;, line 3\r\n\\u001b[31mValueError\\u001b[0m\n" in body
    )
    for field in ("input", "custom_status", "failure_message", "stack_trace"):
        _shows_none_of_them(_get(logged_in, url + f"payload/{field}/"))
    terminated, url = _instance(status="TERMINATED", output='"stop \u202eit"')
    factories.run(terminated)
    body = _get(logged_in, url)
    _shows_none_of_them(body)
    assert 'id="termination-reason">reason: <bdi>&quot;stop \\u202eit&quot;</bdi>' in body


def test_control_characters_in_event_details_are_shown_as_escapes_not_in_the_download(logged_in):
    inst, url = _instance(status="FAILED")
    run = factories.run(inst, event_count=3, started_at=inst.created_at)
    failure = {
        "errorType": "ValueError",
        "errorMessage": "bad \x1b[1mvalue",
        "stackTrace": "Traceback:\n\tline 1\x07\n",
    }
    events = [
        ("executionStarted", "two_steps", {"name": "two_steps", "input": '"cod\u202etxt"'}),
        ("taskFailed", "check", {"failureDetails": failure}),
        ("executionSuspended", "", {"input": '"\u2066why\x0c"'}),
    ]
    for position, (event_type, name, details) in enumerate(events):
        HistoryEvent.objects.create(
            run=run,
            position=position,
            event_id=position - 1,
            event_type=event_type,
            name=name,
            timestamp=inst.created_at + timedelta(seconds=position),
            details=details,
        )
    body = _get(logged_in, url)
    _shows_none_of_them(body)
    assert "ValueError: bad \\u001b[1mvalue" in body  # the summary, and the last failed
    assert "Traceback:\n\tline 1\\u0007\n" in body
    assert "input &quot;cod\\u202etxt&quot;" in body
    # The timeline's tooltips too.
    assert "<title>suspended: &quot;\\u2066why\\u000c&quot; (event 2)</title>" in body
    _shows_none_of_them(_get(logged_in, url + f"runs/{run.ordinal}/events/1/"))
    Instance.objects.filter(pk=inst.pk).update(status="SUSPENDED")
    body = _get(logged_in, url)
    _shows_none_of_them(body)
    assert "&quot;\\u2066why\\u000c&quot;. Work resumes" in body
    # The download gives the details as stored.
    download = logged_in.get(url + f"runs/{run.ordinal}/history.json")
    downloaded = json.loads(b"".join(download.streaming_content))
    assert [e["details"] for e in downloaded["events"]] == [d for _, _, d in events]


# --- deep nesting ---------------------------------------------------------------------------------


def test_deeply_nested_json_is_shown_as_stored(logged_in):
    _, url = _instance(input=DEEP, output=json.dumps({"ok": DEEP}))
    body = _get(logged_in, url)
    assert DEEP in body
    assert DEEP in _get(logged_in, url + "payload/input/")
    assert payloads.pretty(DEEP, None) == (DEEP, False)
    assert payloads.pretty(DEEP, 100) == (DEEP[:100], True)


# --- a small payload that indents to a huge one ---------------------------------------------------


def test_json_whose_indented_form_is_huge_is_shown_as_stored(logged_in):
    assert len(WIDE_AND_DEEP) < 64 * 1024
    _, url = _instance(input=WIDE_AND_DEEP)
    body = _get(logged_in, url)
    assert WIDE_AND_DEEP[: payloads.DISPLAY_LIMIT] in body
    assert 'href="' + url + 'payload/input/">See all</a>' in body
    assert len(body) < 100_000
    full = logged_in.get(url + "payload/input/")
    assert full.status_code == 200
    assert WIDE_AND_DEEP in full.content.decode()
    assert len(full.content) < 2 * len(WIDE_AND_DEEP) + 10_000


def test_pretty_output_is_bounded_and_ordinary_json_still_indented():
    text, cut = payloads.pretty(WIDE_AND_DEEP, None)
    assert (text, cut) == (WIDE_AND_DEEP, False)
    # Indenting is tried only up to a bound, whatever the depth and width.
    for raw in (WIDE_AND_DEEP, "[" * 400 + ",".join(["[1]"] * 20000) + "]" * 400):
        text, _ = payloads.pretty(raw, None)
        assert len(text) <= max(payloads.PRETTY_LIMIT, len(raw))
    flat = json.dumps([{"n": i, "text": "x" * 40} for i in range(1000)])
    text, cut = payloads.pretty(flat, None)
    assert text.startswith('[\n  {\n    "n": 0,') and not cut
    assert json.loads(text) == json.loads(flat)


# --- JSON that parsing would change ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"n": 1e400}',  # a float makes it Infinity
        '{"amount": 12345678901234567.89}',  # a float drops the cents
        "[0.1000000000000000055511151231257827]",
        '{"n": NaN}',  # not JSON, though Python's parser takes it
        '{"a": 1, "a": 2}',  # a dict keeps only the last
    ],
)
def test_json_that_parsing_would_change_is_shown_as_stored(raw):
    assert payloads.pretty(raw, None) == (raw, False)
    details = payloads.event_details({"input": raw}, None)
    assert details is not None and json.loads(details.text) == {"input": raw}


def test_numbers_a_float_holds_exactly_are_still_indented_whatever_their_spelling():
    text, _ = payloads.pretty(
        '{"a": 1.50, "b": 1E5, "c": -0.0, "d": 123456789012345678901234}', None
    )
    assert (
        text == '{\n  "a": 1.5,\n  "b": 100000.0,\n  "c": -0.0,\n  "d": 123456789012345678901234\n}'
    )


def test_a_payload_with_a_number_too_big_for_a_float_shows_its_digits_on_the_page(logged_in):
    _, url = _instance(output='{"total": 1e400, "total": 2}')
    body = _get(logged_in, url)
    assert "1e400" in body and "Infinity" not in body
    assert "&quot;total&quot;: 2" in body


# --- failure message and stall description --------------------------------------------------------


def test_a_long_failure_message_is_cut_in_the_summary_with_a_link_to_all_of_it(logged_in):
    message = "".join(f"line {i} went wrong\n" for i in range(3000))
    _, url = _instance(
        status="FAILED", failure_type="ValueError", failure_message=message, failure_stack_trace=""
    )
    body = _get(logged_in, url)
    summary = body[body.index('class="summary"') : body.index('id="payloads"')]
    assert "line 0 went wrong" in summary
    assert "line 2999 went wrong" not in body
    assert f'href="{url}payload/failure_message/">See all</a>' in summary
    full = _get(logged_in, url + "payload/failure_message/")
    assert "line 0 went wrong" in full and "line 2999 went wrong" in full
    assert "Failure message" in full


def test_a_short_failure_message_is_shown_whole_without_a_link(logged_in):
    _, url = _instance(status="FAILED", failure_type="ValueError", failure_message="bad order")
    body = _get(logged_in, url)
    assert '<span class="failure-message">bad order</span>' in body
    assert "payload/failure_message/" not in body
    assert "bad order" in _get(logged_in, url + "payload/failure_message/")


def test_a_long_stall_description_is_cut_with_a_link_to_all_of_it(logged_in):
    description = "".join(f"patch {i} differs; " for i in range(3000))
    _, url = _instance(
        status="STALLED", stall_reason="PATCH_MISMATCH", stall_description=description
    )
    body = _get(logged_in, url)
    assert "patch 0 differs" in body and "patch 2999 differs" not in body
    assert f'href="{url}payload/stall_description/">See all</a>' in body
    assert "patch 2999 differs" in _get(logged_in, url + "payload/stall_description/")


def test_fields_without_text_have_no_payload_page(logged_in):
    _, url = _instance(input='{"a": 1}')
    for field in ("failure_message", "stall_description", "stack_trace", "output", "nope"):
        assert logged_in.get(url + f"payload/{field}/").status_code == 404, field
    assert logged_in.get(url + "payload/input/").status_code == 200


# --- event details missing keys -------------------------------------------------------------------


def test_a_child_created_without_its_instance_id_does_not_break_the_pages(logged_in):
    inst, url = _instance(status="RUNNING")
    run = factories.run(inst, event_count=3, started_at=inst.created_at)
    for position, (event_type, details) in enumerate(
        [
            ("executionStarted", {"name": "two_steps", "input": '{"a": 1}'}),
            ("childWorkflowInstanceCreated", {"name": "line_item", "input": "1"}),
            ("childWorkflowInstanceCreated", {"name": "line_item"}),
        ]
    ):
        HistoryEvent.objects.create(
            run=run,
            position=position,
            event_id=position - 1,
            event_type=event_type,
            name=details["name"],
            timestamp=inst.created_at + timedelta(seconds=position),
            details=details,
        )
    body = _get(logged_in, url)
    assert "input 1" in body
    _get(logged_in, url + f"runs/{run.ordinal}/history/")
    _get(logged_in, url + f"runs/{run.ordinal}/events/2/")


ODD_DETAILS = [
    None,
    {},
    [],
    "text",
    {"input": None, "result": None, "instanceId": None, "name": None},
    {"externalEvent": None},
    {"externalEvent": "approval"},
    {"failureDetails": "boom"},
    {"failureDetails": {"errorType": None}},
    {"input": {"nested": ["a\ud800"]}, "result": 5},
]


@pytest.mark.parametrize("details", ODD_DETAILS)
def test_every_event_type_has_a_summary_whatever_its_details_lack(details):
    for event_type in [*EVENT_TYPES, "unknown"]:
        summary = payloads.event_summary(event_type, details)
        assert isinstance(summary, str)
        summary.encode()
        assert len(summary) <= payloads.SUMMARY_LIMIT
