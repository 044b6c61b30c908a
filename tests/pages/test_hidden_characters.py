"""Ids and names that come from workflow code or an engine (instance, execution, workflow,
activity, event and app ids) holding characters that hide or reorder text: a page shows them
written out, so that one id can't pass for another; links, copy buttons, form values, the
download and the API keep them as they are."""

import json
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import quote, urlencode

import pytest

from tests.console import factories
from workflows_ui import plaintext
from workflows_ui.models import Engine, HistoryEvent, Instance, Run
from workflows_ui.views import instance_url

pytestmark = pytest.mark.django_db

RLO = "\u202e"  # right-to-left override: "‮txt.exe" reads "exe.txt"
#: Characters an id may hold that a page shows nothing of, or that move the text around it.
HIDDEN = {
    "right-to-left override": RLO,
    "left-to-right isolate": "\u2066",
    "zero-width space": "\u200b",
    "word joiner": "\u2060",
    "bell": "\x07",
    "tab": "\t",
    "line feed": "\n",
    "tag latin capital a": "\U000e0041",
}
#: An instance id holding each of them, and the way a page writes it.
SPOOF = f"order-{RLO}1{HIDDEN['zero-width space']}2\x07\t3\n4\u2066\U000e0041"
SPOOF_SHOWN = "order-\\u202e1\\u200b2\\u0007\\u00093\\u000a4\\u2066\\udb40\\udc41"
#: The attributes a browser shows: tooltips, labels.
SHOWN_ATTRIBUTES = {"title", "label", "aria-label", "placeholder", "alt"}


class _Shown(HTMLParser):
    """The text a page shows (its text and the attributes shown) but payloads (JSON shown as
    ``plaintext.visible`` writes it, its layout kept), and its attributes that hold values
    (links, form values, copy buttons)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.values: list[tuple[str, str]] = []
        self.in_payload = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self.in_payload = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "pre":
            self.in_payload = True
        for name, value in attrs:
            if value is None:
                continue
            if name in SHOWN_ATTRIBUTES:
                self.text.append(value)
            else:
                self.values.append((name, value))

    def handle_data(self, data: str) -> None:
        if not self.in_payload:
            self.text.append(data)


def shown(client, url: str, status: int = 200) -> _Shown:
    response = client.get(url)
    assert response.status_code == status, url
    page = _Shown()
    page.feed(response.content.decode())
    return page


def hides_nothing(page: _Shown) -> None:
    """Layout whitespace aside (``\\n`` and spaces between tags), nothing hidden is shown."""
    for name, char in HIDDEN.items():
        spots = [t for t in page.text if char in (t.strip(" \n") if char == "\n" else t)]
        assert spots == [], name


@pytest.fixture
def spoof(db) -> Instance:
    """A running instance whose ids and names hold them all, with a child, a parent, a run and a
    history that names them: an activity still running, an event received, a child started."""
    eng = factories.engine(app_id=f"app{RLO}1")
    parent = factories.instance(eng, instance_id=f"parent{RLO}1", name="parent_flow")
    inst = factories.instance(
        eng,
        instance_id=SPOOF,
        name=f"pay{HIDDEN['zero-width space']}ment",
        version=f"v{RLO}2",
        status="RUNNING",
        parent_engine=eng,
        parent_instance_id=parent.instance_id,
        parent_app_id=f"app{RLO}0",
        current_execution_id=f"exec{HIDDEN['word joiner']}1",
    )
    factories.instance(
        eng,
        instance_id=f"child{RLO}1",
        name="child_flow",
        parent_engine=eng,
        parent_instance_id=SPOOF,
    )
    run = factories.run(
        inst,
        execution_id=f"exec{HIDDEN['word joiner']}1",
        event_count=5,
        started_at=inst.created_at,
        status="RUNNING",
    )
    events = [
        ("workflowStarted", "", {}),
        ("executionStarted", inst.name, {"name": inst.name}),
        ("taskScheduled", f"charge{RLO}card", {"name": f"charge{RLO}card"}),
        ("eventRaised", f"approved{HIDDEN['tab']}by", {"name": f"approved{HIDDEN['tab']}by"}),
        (
            "childWorkflowInstanceCreated",
            f"child{HIDDEN['bell']}flow",
            {"name": f"child{HIDDEN['bell']}flow", "instanceId": f"child{RLO}1"},
        ),
    ]
    for position, (event_type, name, details) in enumerate(events):
        HistoryEvent.objects.create(
            run=run,
            position=position,
            event_id=position
            if event_type in ("taskScheduled", "childWorkflowInstanceCreated")
            else -1,
            event_type=event_type,
            name=name,
            timestamp=inst.created_at + timedelta(seconds=position),
            details=details,
        )
    return inst


def test_a_name_is_written_out_as_an_id_is_but_emoji_keep_their_joiners():
    assert plaintext.visible_name(SPOOF) == SPOOF_SHOWN
    # Prose keeps its tabs and line breaks, and shows zero-width spaces as they are.
    assert plaintext.visible("a\tb\nc\u200b") == "a\tb\nc\u200b"
    family, heart, persian = "👩\u200d👩\u200d👧", "❤\ufe0f", "می\u200cخواهم"
    assert plaintext.visible_name(family + heart + persian) == family + heart + persian


def test_the_instance_page_shows_every_id_and_name_written_out(logged_in, spoof):
    url = instance_url("orders", SPOOF)
    page = shown(logged_in, url)
    hides_nothing(page)
    text = "".join(page.text)
    for written in (
        SPOOF_SHOWN,  # the title and the heading
        "pay\\u200bment",
        "v\\u202e2",
        "exec\\u20601",
        "parent\\u202e1",
        "app\\u202e0",
        "child\\u202e1",
        "charge\\u202ecard",  # waiting on, the timeline's rows and the history
        "approved\\u0009by",
        "child\\u0007flow",
    ):
        assert written in text, written
    assert f"{SPOOF_SHOWN} · Dapr Workflow Console" in text
    # The links and the copy buttons take the ids as they are.
    assert ("data-copy-value", SPOOF) in page.values
    assert ("data-copy-value", f"exec{HIDDEN['word joiner']}1") in page.values
    hrefs = [v for k, v in page.values if k == "href"]
    assert instance_url("orders", f"parent{RLO}1") in hrefs
    assert instance_url("orders", f"child{RLO}1") in hrefs
    # Each of them opens the instance it names.
    for linked in (f"parent{RLO}1", f"child{RLO}1"):
        response = logged_in.get(instance_url("orders", linked))
        assert response.context["inst"].instance_id == linked


def test_the_run_history_event_payload_and_missing_run_pages_write_the_id_out(logged_in, spoof):
    url = instance_url("orders", SPOOF)
    Instance.objects.filter(pk=spoof.pk).update(input='"x"', input_size=3)
    for path in (
        instance_url("orders", SPOOF, 1),
        instance_url("orders", SPOOF, 1, 3),
        url + "payload/input/",
    ):
        page = shown(logged_in, path)
        hides_nothing(page)
        assert SPOOF_SHOWN in "".join(page.text), path
    page = shown(logged_in, url + "?run=other%E2%80%AEone", status=404)
    hides_nothing(page)
    assert "other\\u202eone" in "".join(page.text)
    # An execution id with one opens its run all the same.
    response = logged_in.get(url, {"run": f"exec{HIDDEN['word joiner']}1"})
    assert response.status_code == 302
    assert response["Location"] == instance_url("orders", SPOOF, 1)


def test_the_list_writes_ids_and_names_out_and_links_and_finds_them_as_they_are(logged_in, spoof):
    page = shown(logged_in, "/instances/?purged=include")
    hides_nothing(page)
    text = "".join(page.text)
    assert SPOOF_SHOWN in text and "pay\\u200bment" in text
    assert ("href", instance_url("orders", SPOOF)) in page.values
    # Found by a prefix holding them, as typed or pasted; a prefix as shown is another id.
    found = shown(logged_in, "/instances/?" + urlencode({"id_prefix": f"order-{RLO}1\u200b"}))
    assert ("href", instance_url("orders", SPOOF)) in found.values
    assert ("value", f"order-{RLO}1\u200b") in found.values  # the filter keeps what was typed
    hides_nothing(found)
    as_shown = shown(logged_in, "/instances/?" + urlencode({"id_prefix": "order-\\u202e1"}))
    assert ("href", instance_url("orders", SPOOF)) not in as_shown.values
    # The list's children-of filter names the parent written out, and keeps it as it is.
    children = shown(logged_in, "/instances/?" + urlencode({"parent": f"orders/{SPOOF}"}))
    hides_nothing(children)
    assert f"orders/{SPOOF_SHOWN}" in "".join(children.text)
    assert ("value", f"orders/{SPOOF}") in children.values
    assert ("href", instance_url("orders", f"child{RLO}1")) in children.values


def test_the_name_filters_options_keep_the_name_and_show_it_written_out(logged_in, spoof):
    page = shown(logged_in, "/instances/")
    assert ("value", f"pay{HIDDEN['zero-width space']}ment") in page.values
    assert "pay\\u200bment" in page.text
    hides_nothing(page)


def test_the_engines_page_writes_the_app_id_out(logged_in, spoof):
    Engine.objects.filter(name="orders").update(app_id=f"app{RLO}1")
    page = shown(logged_in, "/")
    hides_nothing(page)
    assert "app\\u202e1" in "".join(page.text)


def test_the_download_and_the_api_keep_the_ids_and_names_as_they_are(logged_in, spoof):
    url = instance_url("orders", SPOOF, 1) + "history.json"
    downloaded = json.loads(b"".join(logged_in.get(url).streaming_content))
    assert downloaded["instance_id"] == SPOOF
    assert downloaded["execution_id"] == f"exec{HIDDEN['word joiner']}1"
    assert [e["name"] for e in downloaded["events"]][2] == f"charge{RLO}card"
    api = logged_in.get("/api/instances/orders/" + quote(SPOOF, safe="") + "/").json()
    assert api["instance_id"] == SPOOF
    assert api["name"] == f"pay{HIDDEN['zero-width space']}ment"
    assert Run.objects.get(instance=spoof).execution_id == f"exec{HIDDEN['word joiner']}1"
