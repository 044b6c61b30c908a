import pytest

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
