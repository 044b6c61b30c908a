import pytest
from django.db import connection

from tests.console import factories
from workflows_ui import search
from workflows_ui.models import Instance

pytestmark = pytest.mark.django_db


def ids(qs):
    return sorted(qs.values_list("instance_id", flat=True))


def test_it_finds_instances_by_words_of_any_payload():
    factories.instance(instance_id="a", input='{"id": "o-1001", "qty": 2}')
    factories.instance(instance_id="b", output='{"tracking": "trk-o-2002"}')
    factories.instance(instance_id="c", custom_status='{"step": "packing"}')
    factories.instance(instance_id="d", failure_message="no carrier serves this address")
    factories.instance(instance_id="e", input='{"id": "o-3003"}')
    qs = Instance.objects.all()
    assert ids(search.filter_text(qs, "o-1001")) == ["a"]
    assert ids(search.filter_text(qs, "trk-o-2002")) == ["b"]
    assert ids(search.filter_text(qs, "packing")) == ["c"]
    assert ids(search.filter_text(qs, "Carrier ADDRESS")) == ["d"]
    assert ids(search.filter_text(qs, "carrier nowhere")) == []


def test_it_follows_updates_and_deletes():
    inst = factories.instance(instance_id="a", custom_status='"step one"')
    qs = Instance.objects.all()
    Instance.objects.filter(pk=inst.pk).update(custom_status='"step two"')
    assert ids(search.filter_text(qs, "one")) == []
    assert ids(search.filter_text(qs, "two")) == ["a"]
    Instance.objects.filter(pk=inst.pk).update(status="FAILED")
    assert ids(search.filter_text(qs, "two")) == ["a"]
    inst.delete()
    assert ids(search.filter_text(qs, "two")) == []


def test_search_operators_typed_by_a_user_are_taken_literally():
    factories.instance(instance_id="a", input='"NEAR OR AND NOT"')
    qs = Instance.objects.all()
    assert ids(search.filter_text(qs, 'NEAR( "OR" *')) == ["a"]
    assert ids(search.filter_text(qs, "   ")) == ["a"]


def test_id_prefix_is_case_sensitive_and_literal():
    for iid in ["order-1", "order-1:0001", "Order-2", "order_x", "orderz"]:
        factories.instance(instance_id=iid)
    qs = Instance.objects.all()
    assert ids(search.filter_id_prefix(qs, "order-1")) == ["order-1", "order-1:0001"]
    assert ids(search.filter_id_prefix(qs, "order_")) == ["order_x"]
    assert ids(search.filter_id_prefix(qs, "Order")) == ["Order-2"]


def test_id_prefix_takes_ids_with_any_code_point_after_it():
    top = "\U0010ffff"
    for iid in ["a" + top + "z", "a\ud7ffx", "a\ue000", "b", top + top, top + "x"]:
        factories.instance(instance_id=iid)
    qs = Instance.objects.all()
    assert ids(search.filter_id_prefix(qs, "a")) == ["a\ud7ffx", "a\ue000", "a" + top + "z"]
    assert ids(search.filter_id_prefix(qs, "a\ud7ff")) == ["a\ud7ffx"]
    assert ids(search.filter_id_prefix(qs, top)) == [top + "x", top + top]


# What SQLite's tokenizer splits (a letter or digit run is a word, anything else separates),
# PostgreSQL must split the same way: its own parser keeps emails, hosts, URLs, paths, versions
# and decimals whole.
SPLIT_PAYLOAD = (
    '{"email":"bob@acme.com","url":"https://shop.example.com/orders/42?x=1",'
    '"path":"/var/data/file.txt","amount":59.9,"ver":"v1.2.3"}'
)
SPLIT_WORDS = [
    "acme",
    "acme.com",
    "bob",
    "example",
    "shop",
    "orders",
    "42",
    "var",
    "file",
    "59",
    "v1",
    "1.2.3",
    "bob@acme.com",
    "https://shop.example.com/orders/42",
    "/var/data/file.txt",
    "59.9",
    "v1.2.3",
]


@pytest.mark.parametrize("q", SPLIT_WORDS)
def test_words_inside_emails_urls_paths_versions_and_decimals_are_found(q):
    factories.instance(instance_id="a", input=SPLIT_PAYLOAD)
    factories.instance(instance_id="b", input='{"email":"eve@corp.org","amount":12.5}')
    assert ids(search.filter_text(Instance.objects.all(), q)) == ["a"]


UNICODE_PAYLOAD = '{"city":"Zürich","note":"東京タワー","dash":"naïve—dash","emoji":"ok👍done"}'


@pytest.mark.parametrize("q", ["Zürich", "東京タワー", "naïve", "dash", "ok", "done", "ok👍done"])
def test_letters_beyond_ascii_stay_in_words_and_other_signs_separate(q):
    factories.instance(instance_id="a", input=UNICODE_PAYLOAD)
    factories.instance(instance_id="b", input='{"city":"Oslo"}')
    assert ids(search.filter_text(Instance.objects.all(), q)) == ["a"]


def test_words_joined_by_an_underscore_match_as_adjacent_words():
    factories.instance(instance_id="a", input='{"ref": "order_42"}')
    factories.instance(instance_id="b", input='{"ref": "order 7", "n": 42}')
    factories.instance(instance_id="c", input='{"ref": "42 order"}')
    qs = Instance.objects.all()
    assert ids(search.filter_text(qs, "order_42")) == ["a"]
    assert ids(search.filter_text(qs, "order 42")) == ["a", "b", "c"]
    assert ids(search.filter_text(qs, "_")) == []
    assert ids(search.filter_text(qs, "_ order_42")) == ["a"]


def test_the_migrated_search_column_is_the_one_searches_are_split_for():
    """The migrations spell out the column's SQL; searches are split by ``search``'s."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's search column")
    expr = (
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
        "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
        "WHERE d.adrelid = %s::regclass AND a.attname = 'search_document'"
    )
    with connection.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE search_probe (input text, output text, custom_status text, "
            f"failure_message text, search_document tsvector "
            f"GENERATED ALWAYS AS ({search.PG_DOCUMENT}) STORED)"
        )
        cur.execute(expr, [search.TABLE])
        migrated = cur.fetchone()
        cur.execute(expr, ["search_probe"])
        built = cur.fetchone()
    assert migrated == built
    assert migrated is not None
