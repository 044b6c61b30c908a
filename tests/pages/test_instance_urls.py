"""Instance ids are arbitrary strings: every one gets a link to its own page, and only to it."""

import json
import re
from html import unescape

import pytest
from django.contrib.auth.models import User

from tests.console import factories
from tests.console.support import asgi_get, captured_log
from workflows_ui.models import RefreshRequest
from workflows_ui.views import instance_url

ODD_IDS = [
    "nl\nid",  # the SDK starts it; the list page answered 500 for everyone
    "x/runs/1",  # was run 1 of instance "x"
    "a/../b",  # the browser resolved it to instance "b"
    "..",
    ".",
    "a%2Fb",
    "50%",
    "y/payload/input",
    "z/runs/1/history",
    "\u00fc:1",
    "q?x=1#f",
    "sp ace",
]


@pytest.fixture
def odd(db):
    eng = factories.engine()
    # The ones their links used to land on instead.
    for iid in ("x", "b", "a"):
        factories.instance(eng, instance_id=iid, name="decoy")
    return {iid: factories.instance(eng, instance_id=iid, name="odd_one") for iid in ODD_IDS}


@pytest.mark.parametrize("iid", ODD_IDS)
def test_an_odd_id_opens_its_own_page(logged_in, odd, iid):
    response = logged_in.get(instance_url("orders", iid))
    assert response.status_code == 200
    assert response.context["inst"].pk == odd[iid].pk
    assert response.context["inst"].name == "odd_one"


def test_the_list_links_every_odd_id_to_its_page(logged_in, odd):
    response = logged_in.get("/instances/?name=odd_one")
    assert response.status_code == 200
    body = unescape(response.content.decode())
    for iid in ODD_IDS:
        assert f'href="{instance_url("orders", iid)}"' in body


def test_plain_and_child_ids_keep_plain_urls():
    assert instance_url("orders", "order-1:0001") == "/instances/orders/order-1:0001/"
    assert instance_url("orders", "o_1", 2) == "/instances/orders/o_1/runs/2/"


def test_the_api_takes_an_id_with_a_newline(logged_in, odd):
    response = logged_in.get("/api/instances/orders/nl%0Aid/")
    assert response.status_code == 200
    assert response.json()["instance_id"] == "nl\nid"


def test_direction_overrides_in_untrusted_text_stay_inside_it(logged_in, db):
    rlo = "\u202e"
    factories.instance(instance_id=f"{rlo}evil", name=f"{rlo}flow", version=f"{rlo}v2")
    body = logged_in.get(instance_url("orders", f"{rlo}evil")).content.decode()
    # Written out, and kept inside the isolate all the same.
    for text in ("evil", "flow", "v2"):
        assert re.search(rf"<bdi( [^>]*)?>\\u202e{text}</bdi>", body), text


def test_a_history_download_keeps_an_id_in_any_script_as_its_file_name(logged_in, db):
    inst = factories.instance(instance_id="注文-review-1")
    factories.run(inst)
    response = logged_in.get(instance_url("orders", inst.instance_id, 1) + "history.json")
    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        "attachment; filename*=utf-8''%E6%B3%A8%E6%96%87-review-1-run1-history.json"
    )


@pytest.mark.django_db(transaction=True)  # the ASGI handler reads in a thread of its own
def test_an_id_that_is_no_utf8_is_refused_and_the_engine_not_asked(client):
    # daphne decodes %FF to U+FFFD: the page asked the engine for that id, and opened an
    # instance whose id holds the character itself.
    eng = factories.engine(configured=True, reachable=True)
    factories.instance(eng, instance_id="\ufffd")
    client.force_login(User.objects.create_user("alice"))
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    for path in (
        b"/instances/orders/%FF/",
        b"/instances/orders/a%C3/runs/1/",
        b"/instances/orders/%FF/payload/input/",
        b"/api/instances/orders/%FF/",
        b"/api/instances/orders/%FF/runs/",
        b"/api/instances/orders/%FF/history/",
    ):
        status, body = asgi_get(path, cookie)
        assert status == 404, path
        assert "not valid" in body.decode(), path
    assert not RefreshRequest.objects.exists()
    # Signed out, the API asks for a sign-in first, as for any other path.
    assert asgi_get(b"/api/instances/orders/%FF/")[0] in (401, 403)
    assert asgi_get(b"/instances/orders/%FF/")[0] == 302
    # The character itself, sent as UTF-8, is an id like any other.
    status, body = asgi_get(b"/api/instances/orders/%EF%BF%BD/", cookie)
    assert status == 200 and json.loads(body)["instance_id"] == "\ufffd"
    assert asgi_get(b"/instances/orders/%EF%BF%BD/", cookie)[0] == 200


def test_a_path_of_100000_characters_is_logged_cut(logged_in):
    # Anyone can ask for such a path (daphne takes request lines of about 16 KiB, a proxy may
    # take more): Django's "Not Found" line quoted it whole.
    with captured_log() as written:
        response = logged_in.get("/instances/orders/" + "a" * 100_000 + "/")
    assert response.status_code == 404
    [line] = [x for x in written.getvalue().splitlines() if "Not Found: /instances/orders/aaa" in x]
    assert len(line) < 4100
    assert re.search(r"\.\.\. \(cut: 100,0\d\d characters\)$", line)
