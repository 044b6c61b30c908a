"""Two writers of the change log on PostgreSQL, caught at the worst moment: an indexer writing
rows for kin on another engine's log while that engine's indexer or its retention writes too.
Each must wait for the other, not both for each other ("deadlock detected", a chunk lost)."""

import contextlib
import io
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from engine_bridge import locks, retention
from engine_bridge.indexer import EngineIndexer, Fetched, Limits, PassResult
from tests.console.fakes import FakeEngine, golden_child, golden_instance
from workflows_ui.models import ChangeLog, Engine, Instance

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time")


def _orders_with_a_parent(**limits) -> tuple[EngineIndexer, FakeEngine]:
    fake = FakeEngine()
    fake.add(*golden_instance("fan_out_children"))  # parent g-fan-out, app id "example"
    orders = Engine.objects.create(name="orders", address="x:1")
    indexer = EngineIndexer(orders, fake, Limits(concurrency=2, **limits))
    indexer.run_pass()
    return indexer, fake


def _billing_with_its_child() -> EngineIndexer:
    """billing's indexer, with g-fan-out's first child to index: a child of orders' parent."""
    state, events = golden_child("fan_out_children", "g-fan-out:0001")
    fake = FakeEngine()
    fake.add(state, [replace(e, source_app_id="") for e in events])
    billing = Engine.objects.create(name="billing", address="y:1")
    return EngineIndexer(billing, fake, Limits(concurrency=2))


def _side_by_side(there, here) -> dict[str, Exception]:
    """Runs ``there`` in a thread of its own (its own connection) while ``here`` runs in this
    one; what either raised, by side."""
    errors: dict[str, Exception] = {}

    def run():
        try:
            there()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors["there"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        here()
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors["here"] = exc
    thread.join(20)
    return errors


def _held(indexer: EngineIndexer) -> locks.EngineLock:
    lock = locks.EngineLock(indexer.engine.pk, indexer.engine.name)
    lock.acquire()
    indexer.holder_token = lock.token
    return lock


def test_a_kin_row_on_an_engine_whose_indexer_writes_a_chunk_meanwhile(monkeypatch):
    """billing logs the parent's page on orders' log while orders' indexer, in its chunk's
    transaction, holds its engine's row (its fence) and waits for the change log's lock."""
    orders, orders_fake = _orders_with_a_parent(
        active_interval=0.0, sweep_interval=0.0, sweep_pause_factor=0.0
    )
    billing = _billing_with_its_child()
    held = [_held(orders), _held(billing)]
    orders_fake.add(*golden_instance("two_steps"))  # something for orders to write
    orders_in_chunk, billing_logged = threading.Event(), threading.Event()
    write_chunk, log_relatives = EngineIndexer._write_chunk, EngineIndexer._log_relatives

    def chunk(self, *args, **kwargs):
        if self is orders:
            orders_in_chunk.set()
            billing_logged.wait(5)
        return write_chunk(self, *args, **kwargs)

    def log(self, w):
        if self is billing:
            orders_in_chunk.wait(5)
        log_relatives(self, w)
        if self is billing:
            billing_logged.set()

    monkeypatch.setattr(EngineIndexer, "_write_chunk", chunk)
    monkeypatch.setattr(EngineIndexer, "_log_relatives", log)
    errors = _side_by_side(orders.run_pass, billing.run_pass)
    for lock in held:
        lock.release()
    assert not errors
    parent = Instance.objects.get(engine__name="orders", instance_id="g-fan-out")
    assert ChangeLog.objects.filter(instance=parent, engine__name="orders").exists()
    assert Instance.objects.filter(engine__name="orders").count() == 2  # its chunk landed


def test_retention_deleting_a_tombstone_that_another_engine_logs_as_kin(monkeypatch):
    """orders' retention deletes the parent's tombstone while billing, indexing its child,
    reads it as kin under the change log's lock."""
    orders, _ = _orders_with_a_parent(retention_days=30)
    Instance.objects.filter(instance_id="g-fan-out").update(
        purged=True, purged_at=timezone.now() - timedelta(days=31)
    )
    billing = _billing_with_its_child()
    deleted, read = threading.Event(), threading.Event()
    take_lock, log_relatives = retention.change_log_in_commit_order, EngineIndexer._log_relatives

    def lock_once_billing_read(*args, **kwargs):
        deleted.set()
        read.wait(2)  # billing can't read them now: kept from deletion, they wait for us
        take_lock(*args, **kwargs)

    def log_once_deleted(self, w):
        deleted.wait(5)
        log_relatives(self, w)
        read.set()

    monkeypatch.setattr(retention, "change_log_in_commit_order", lock_once_billing_read)
    monkeypatch.setattr(EngineIndexer, "_log_relatives", log_once_deleted)
    errors = _side_by_side(
        lambda: retention.forget_expired(orders.engine.pk, 30, timezone.now(), ""), billing.run_pass
    )
    assert not errors
    assert not Instance.objects.filter(instance_id="g-fan-out").exists()
    child = Instance.objects.get(instance_id="g-fan-out:0001")
    assert child.engine.name == "billing"


def test_two_retentions_deleting_a_parent_and_its_child_tombstones(monkeypatch):
    """orders' retention deletes the parent's tombstone while billing's deletes its child's:
    each would hold its own and keep the other's from deletion."""
    orders, _ = _orders_with_a_parent()
    billing = _billing_with_its_child()
    billing.run_pass()
    child = Instance.objects.get(instance_id="g-fan-out:0001")
    assert child.parent_engine_id == orders.engine.pk
    Instance.objects.filter(instance_id__in=["g-fan-out", "g-fan-out:0001"]).update(
        purged=True, purged_at=timezone.now() - timedelta(days=31)
    )
    both_deleted = threading.Barrier(2, timeout=2)
    keep = retention.keep_from_deletion

    def keep_once_both_deleted(pks, *args, **kwargs):
        # Broken when the other one waits for this one's commit: as it should.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_deleted.wait()
        keep(pks, *args, **kwargs)

    monkeypatch.setattr(retention, "keep_from_deletion", keep_once_both_deleted)
    errors = _side_by_side(
        lambda: retention.forget_expired(orders.engine.pk, 30, timezone.now(), ""),
        lambda: retention.forget_expired(billing.engine.pk, 30, timezone.now(), ""),
    )
    assert not errors
    assert not Instance.objects.filter(instance_id__in=["g-fan-out", "g-fan-out:0001"]).exists()


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
        return cur.fetchone()[0] > 0


def test_forgetengine_unlinking_children_that_their_indexer_writes(monkeypatch):
    """forgetengine unlinks orders' children on billing while billing's indexer writes a chunk
    with both, read in the other order than their rows'."""
    orders, _ = _orders_with_a_parent()
    fake = FakeEngine()
    for child_id in ["g-fan-out:0001", "g-fan-out:0002"]:
        state, events = golden_child("fan_out_children", child_id)
        fake.add(state, [replace(e, source_app_id="") for e in events])
    billing_engine = Engine.objects.create(name="billing", address="y:1")
    billing = EngineIndexer(billing_engine, fake, Limits(concurrency=2))
    billing.run_pass()
    one, two = Instance.objects.filter(engine=billing_engine).order_by("pk")
    assert one.parent_engine_id == two.parent_engine_id == orders.engine.pk
    fetched = []
    for inst in (two, one):  # the second's read finished first
        state, _ = fake.instances[inst.instance_id]
        state = replace(state, last_updated_at=state.last_updated_at + timedelta(seconds=1))
        fetched.append(Fetched(inst.instance_id, state, None))
    first_saved = threading.Event()
    apply = EngineIndexer._apply

    def apply_then_wait(self, f, *args, **kwargs):
        apply(self, f, *args, **kwargs)
        if not first_saved.is_set():
            first_saved.set()
            deadline = time.monotonic() + 5
            while not _waiting_on_a_lock() and time.monotonic() < deadline:
                time.sleep(0.05)

    monkeypatch.setattr(EngineIndexer, "_apply", apply_then_wait)

    def unlink():
        first_saved.wait(5)
        retention.unlink_children_batch(orders.engine.pk, "")

    errors = _side_by_side(unlink, lambda: billing._write_atomic(fetched, PassResult(), {}))
    assert not errors
    assert not Instance.objects.filter(parent_engine=orders.engine).exists()


def test_forgetengine_deleting_an_engine_an_indexer_links_a_child_to_meanwhile(monkeypatch):
    """billing's indexer found orders as the engine of its new child's parent just before
    forgetengine cleared orders' app id, and commits the link between forgetengine's last
    unlinking and its deletion of orders (which a linked child forbids)."""
    orders, _ = _orders_with_a_parent()
    Engine.objects.filter(pk=orders.engine.pk).update(configured=False)  # out of the settings
    billing = _billing_with_its_child()
    looked_up, billing_done = threading.Event(), threading.Event()
    apply, unlink_children = EngineIndexer._apply, retention.unlink_children

    def apply_then_wait(self, *args, **kwargs):
        apply(self, *args, **kwargs)  # the child's parent engine looked up: orders
        looked_up.set()
        deadline = time.monotonic() + 3
        while not _waiting_on_a_lock() and time.monotonic() < deadline:
            time.sleep(0.05)

    def unlink_then_wait(children):
        unlink_children(children)
        billing_done.wait(5)

    monkeypatch.setattr(EngineIndexer, "_apply", apply_then_wait)
    monkeypatch.setattr(retention, "unlink_children", unlink_then_wait)

    def index_billing():
        try:
            billing.run_pass()
        finally:
            billing_done.set()

    def forget_orders():
        looked_up.wait(5)
        call_command("forgetengine", "orders", "--yes", stdout=io.StringIO())

    errors = _side_by_side(index_billing, forget_orders)
    assert not errors
    assert not Engine.objects.filter(name="orders").exists()
    child = Instance.objects.get(engine=billing.engine)
    assert (child.parent_engine_id, child.parent_app_id) == (None, "example")
