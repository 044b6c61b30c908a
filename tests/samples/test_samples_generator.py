"""The load generator, driven against a fake client on a fake clock."""

from __future__ import annotations

import itertools
import logging
import random
import sys
import threading
from datetime import UTC, datetime
from types import SimpleNamespace

import grpc
import pytest
from dapr.ext.workflow import WorkflowStatus

from devengine.samples import generator, workflows
from devengine.samples.generator import InstanceIds, LoadGenerator


class FakeClient:
    """Records calls; instances move between statuses the way the engine would move them."""

    def __init__(self, existing: list[str] = ()) -> None:  # type: ignore[assignment]
        self.existing = list(existing)
        self.calls: list[tuple] = []
        self.inputs: dict[str, dict] = {}
        self.status: dict[str, WorkflowStatus] = {}

    def iter_workflow_instance_ids(self, page_size: int = 1024):
        return iter(self.existing)

    def schedule_new_workflow(self, workflow, *, input, instance_id):
        self.calls.append(("start", workflow.__name__, instance_id))
        self.inputs[instance_id] = input
        self.status[instance_id] = WorkflowStatus.RUNNING
        return instance_id

    def get_workflow_state(self, instance_id, fetch_payloads=True):
        status = self.status.get(instance_id)
        return SimpleNamespace(runtime_status=status) if status else None

    def raise_workflow_event(self, instance_id, event_name, *, data=None):
        self.calls.append(("raise", instance_id, event_name))

    def pause_workflow(self, instance_id):
        self.calls.append(("pause", instance_id))
        self.status[instance_id] = WorkflowStatus.SUSPENDED

    def resume_workflow(self, instance_id):
        self.calls.append(("resume", instance_id))
        self.status[instance_id] = WorkflowStatus.RUNNING

    def terminate_workflow(self, instance_id, *, output=None):
        self.calls.append(("terminate", instance_id))
        self.status[instance_id] = WorkflowStatus.TERMINATED


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_generator(
    client: FakeClient, clock: FakeClock | None = None, billing: FakeClient | None = None
) -> LoadGenerator:
    gen = LoadGenerator(
        client,  # type: ignore[arg-type]
        billing=billing,  # type: ignore[arg-type]
        rate=2,
        stop=threading.Event(),
        rng=random.Random(3),
        clock=clock or FakeClock(),
        now=lambda: datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
        monitors=False,
    )
    # Run pool work inline so the test sees every call at once.
    gen._pool.submit = lambda fn, *a: fn(*a)  # type: ignore[method-assign]
    return gen


def test_ids_continue_after_the_highest_sequence_already_on_the_engine():
    ids = InstanceIds(lambda: "20261123")
    ids.seed(
        [
            "order-20261123-00041",
            "order-20261123-00007",
            "order-20261122-00900",
            "shipment-20261123-00003:0001",
            "4b1f6d6e-uuid-style",
        ]
    )
    assert ids.next("order") == "order-20261123-00042"
    assert ids.next("shipment") == "shipment-20261123-00001"


def test_a_restarted_generator_adopts_the_monitors_still_running():
    existing = ["monitor-adyen-eu-20261123-00002", "monitor-adyen-eu-20261123-00003"]
    client = FakeClient(existing)
    for instance_id in existing:
        client.status[instance_id] = WorkflowStatus.RUNNING
    gen = make_generator(client)
    gen._seed_ids()
    gen._keep_monitors_running()
    started = [c[2] for c in client.calls if c[0] == "start"]
    assert started == ["monitor-stripe-us-20261123-00001", "monitor-paypal-global-20261123-00001"]


def start_a_deck(gen: LoadGenerator) -> None:
    for _ in range(sum(copies for _, _, copies in generator.SCENARIOS.values())):
        gen.start_next()
    gen._keep_monitors_running()


def started(client: FakeClient) -> set[str]:
    return {name for kind, name, *_ in client.calls if kind == "start"}


def test_as_two_apps_billings_workflows_start_on_its_engine_and_orders_are_invoiced_there():
    orders = FakeClient(["order-20261123-00041"])
    billing = FakeClient(["invoice-20261123-00009", "payment-20261123-00003"])
    gen = make_generator(orders, billing=billing)
    gen._seed_ids()
    start_a_deck(gen)

    assert started(billing) == {w.__name__ for w in workflows.BILLING.workflows}
    assert started(orders) == {w.__name__ for w in workflows.ORDERS.workflows} - {
        "track_package"  # a child of ship_order's
    }
    # The ids continue after those of both engines.
    assert "order-20261123-00042" in orders.inputs
    assert "invoice-20261123-00010" in billing.inputs
    assert "payment-20261123-00004" in billing.inputs
    orders_started = [i for kind, name, i in orders.calls if name == "process_order"]
    assert {orders.inputs[i]["billing_app"] for i in orders_started} == {"billing"}


def test_as_one_app_everything_starts_on_the_one_engine_and_orders_are_invoiced_there():
    client = FakeClient()
    gen = make_generator(client)
    start_a_deck(gen)

    assert started(client) == {w.__name__ for w in workflows.WORKFLOWS} - {"track_package"}
    orders_started = [i for kind, name, i in client.calls if name == "process_order"]
    assert orders_started
    assert not any("billing_app" in client.inputs[i] for i in orders_started)


def test_without_a_listing_ids_are_numbered_from_the_time_of_day():
    ids = InstanceIds(lambda: "20261123")
    ids.seed_from_clock(datetime(2026, 11, 23, 1, 0, 0, tzinfo=UTC))
    assert ids.next("order") == "order-20261123-36001"


def test_every_scenario_is_drawn_once_per_deck():
    gen = make_generator(FakeClient())
    deck_size = sum(copies for _, _, copies in generator.SCENARIOS.values())
    drawn = [gen.draw() for _ in range(deck_size)]
    assert set(drawn) == set(generator.SCENARIOS)
    assert len(drawn) == deck_size


def test_ids_meet_the_dapr_rule_for_instance_ids():
    gen = make_generator(FakeClient())
    for _ in range(40):
        gen.start_next()
    for call in gen.client.calls:
        instance_id = call[2]
        assert len(instance_id) <= 64
        assert instance_id.replace("-", "").replace("_", "").isalnum()


def test_a_paused_renewal_is_resumed_only_while_it_is_suspended():
    client = FakeClient()
    clock = FakeClock()
    gen = make_generator(client, clock)
    plan = gen.plan("renewal_paused_resumed", "renewal-20261123-00001")
    gen._start("renewal-20261123-00001", plan)
    client.status["renewal-20261123-00001"] = WorkflowStatus.COMPLETED  # e.g. confirmed meanwhile
    clock.now += 120
    gen._run_due(clock.now)
    assert [c[0] for c in client.calls] == ["start"]


def test_pause_then_resume_when_the_renewal_is_still_waiting():
    client = FakeClient()
    clock = FakeClock()
    gen = make_generator(client, clock)
    gen._start(
        "renewal-20261123-00002", gen.plan("renewal_paused_resumed", "renewal-20261123-00002")
    )
    clock.now += 120
    gen._run_due(clock.now)
    # The customer may also confirm while it is paused; that changes nothing here.
    assert [c[0] for c in client.calls if c[0] != "raise"] == ["start", "pause", "resume"]


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("order_approved", ["start", "raise"]),
        ("order_rejected", ["start", "raise"]),
        ("order_expires", ["start"]),
        ("renewal_paused", ["start", "pause"]),
        ("shipment_cancelled", ["start", "terminate"]),
        ("renewal_confirmed", ["start", "raise"]),
    ],
)
def test_operator_and_customer_actions_per_scenario(scenario, expected):
    client = FakeClient()
    clock = FakeClock()
    gen = make_generator(client, clock)
    instance_id = gen.ids.next(generator.SCENARIOS[scenario][1])
    gen._start(instance_id, gen.plan(scenario, instance_id))
    clock.now += 120
    gen._run_due(clock.now)
    assert [c[0] for c in client.calls] == expected


@pytest.mark.parametrize("seed", range(6))
def test_a_renewal_support_closes_is_terminated_whether_or_not_it_was_paused_first(seed):
    client = FakeClient()
    clock = FakeClock()
    gen = make_generator(client, clock)
    gen.rng = random.Random(seed)
    gen._start("renewal-20261123-00060", gen.plan("renewal_terminated", "renewal-20261123-00060"))
    clock.now += 120
    gen._run_due(clock.now)
    assert [c[0] for c in client.calls] in (
        ["start", "terminate"],
        ["start", "pause", "terminate"],
    )
    assert client.status["renewal-20261123-00060"] is WorkflowStatus.TERMINATED


def test_orders_needing_approval_are_the_ones_the_managers_answer():
    gen = make_generator(FakeClient())
    for n in range(200):
        assert workflows.needs_approval(gen.make_order(f"order-20261123-{n:05d}", large=True))
        assert not workflows.needs_approval(gen.make_order(f"order-20261123-{n:05d}", large=False))


def test_a_stalled_engine_makes_the_generator_skip_starts_instead_of_queueing_them():
    gen = make_generator(FakeClient())
    gen._pool.submit = lambda fn, *a: None  # type: ignore[method-assign]  # calls never finish
    for _ in range(generator.MAX_IN_FLIGHT + 5):
        gen.start_next()
    assert gen.skipped == 5


class Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "failed to connect to all addresses"


def test_an_engine_outage_is_reported_once_and_the_load_resumes_when_it_answers(caplog):
    client = FakeClient()
    clock = FakeClock()
    gen = make_generator(client, clock)
    healthy = client.schedule_new_workflow
    client.schedule_new_workflow = lambda *a, **kw: (_ for _ in ()).throw(Unavailable())
    with caplog.at_level(logging.INFO, logger="devengine.samples.generator"):
        for _ in range(5):
            gen.start_next()
        assert gen.engine_down
        client.schedule_new_workflow = healthy
        clock.now += generator.PROBE_EVERY  # the next probe
        gen.start_next()
    assert not gen.engine_down
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "engine is unavailable" in warnings[0].getMessage()
    assert gen.actions["lost while the engine was down"] == 5


def test_as_two_apps_billings_outage_is_reported_once_and_orders_keep_starting(caplog):
    orders, billing = FakeClient(), FakeClient()
    clock = FakeClock()
    gen = make_generator(orders, clock, billing=billing)
    healthy = billing.schedule_new_workflow
    probes = []

    def down(*args, **kwargs):
        probes.append(clock.now)
        raise Unavailable()

    billing.schedule_new_workflow = down
    with caplog.at_level(logging.INFO, logger="devengine.samples.generator"):
        for _ in range(80):  # two decks, at the rate of 2 a second
            gen.start_next()
            clock.now += 0.5
        outage = [r.getMessage() for r in caplog.records]
        billing.schedule_new_workflow = healthy
        for _ in range(40):
            gen.start_next()
            clock.now += 0.5

    warnings = [m for m in outage if "unavailable" in m]
    assert len(warnings) == 1, outage
    assert "billing engine is unavailable" in warnings[0]
    assert not [m for m in outage if "answers again" in m], outage
    # Orders' engine answers all along: its workflows start at the rate.
    assert len(started_ids(orders)) > 50
    # Billing's is probed every few seconds, not called at the rate, and found again.
    assert all(b - a >= generator.PROBE_EVERY for a, b in itertools.pairwise(probes)), probes
    assert started_ids(billing)
    assert not gen.engine_down


def started_ids(client: FakeClient) -> list[str]:
    return [i for kind, _, i in client.calls if kind == "start"]


def test_a_follow_up_due_while_the_engine_is_busy_is_retried_not_lost():
    client = FakeClient()
    clock = FakeClock()
    gen = make_generator(client, clock)
    instance_id = "order-20261123-00050"
    gen._start(instance_id, gen.plan("order_approved", instance_id))
    gen._in_flight = generator.MAX_IN_FLIGHT  # every slot taken by slow calls
    clock.now += 60
    gen._run_due(clock.now)
    assert [c[0] for c in client.calls] == ["start"]
    gen._in_flight = 0
    clock.now += generator.RETRY_DUE_AFTER
    gen._run_due(clock.now)
    assert [c[0] for c in client.calls] == ["start", "raise"]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "scenario", [name for name in generator.SCENARIOS if name.startswith("renewal_")]
)
def test_no_renewal_is_left_waiting_or_paused_for_days(scenario, seed):
    # Left up all day, renewals nobody answers would pile up non-terminal, each re-read by the
    # console's indexer every few seconds: every one is answered (or closed) within the hour.
    client = FakeClient()
    clock = FakeClock()
    gen = make_generator(client, clock)
    gen.rng = random.Random(seed)
    instance_id = gen.ids.next("renewal")
    gen._start(instance_id, gen.plan(scenario, instance_id))
    for _ in range(60):
        clock.now += 60
        gen._run_due(clock.now)
    actions = [c[0] for c in client.calls]
    assert "raise" in actions or "terminate" in actions
    assert client.status[instance_id] is not WorkflowStatus.SUSPENDED


def test_a_worker_wait_left_when_its_loop_closed_is_not_reported(monkeypatch):
    """The SDK closes a worker's event loop while its wait for the next work item is pending:
    collected later, the wait's coroutine made Python print a traceback on a clean stop."""
    import asyncio
    import gc

    from devengine.samples.__main__ import quiet_when_the_workers_loop_closed

    def a_wait_left_on_a_closed_loop() -> None:
        loop = asyncio.new_event_loop()

        async def wait_for_work() -> asyncio.Task:
            task = asyncio.ensure_future(asyncio.Queue().get())
            await asyncio.sleep(0)  # the task now waits for an item
            return task

        task = loop.run_until_complete(wait_for_work())
        loop.close()
        del task
        gc.collect()

    reported: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(str(u.exc_value)))
    a_wait_left_on_a_closed_loop()
    assert reported == ["Event loop is closed"]  # what Python reports by itself

    reported.clear()
    monkeypatch.setattr(sys, "__unraisablehook__", lambda u: reported.append(str(u.exc_value)))
    monkeypatch.setattr(sys, "unraisablehook", quiet_when_the_workers_loop_closed)
    a_wait_left_on_a_closed_loop()
    assert reported == []

    class Broken:
        def __del__(self) -> None:
            raise ValueError("reported as ever")

    Broken()
    gc.collect()
    assert reported == ["reported as ever"]
