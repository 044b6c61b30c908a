"""The load generator: starts sample workflows at a steady rate and plays the people around them.

It starts ``rate`` workflows per second, drawn from a shuffled deck of scenarios (so every
scenario, including the rare ones, occurs once per deck: a run reaches every status within a
minute at the default rate instead of "probably"). Then it acts like the shop's staff and
customers on a schedule: managers approve most large orders, reject some and let some expire;
customers confirm or decline subscription renewals (sometimes while one is paused) and cancel
the odd shipment on its way (a recursive terminate); support pauses some renewals, resumes some
of those and closes accounts (terminates, sometimes while paused). The renewals left waiting,
or paused, are answered 10 to 20 minutes later (support resumes a paused one first), so a run
left up for days holds about 150 of them at a time. Before a resume it checks
that the instance is suspended: the SDK fails a workflow resumed while running. Three
payment-gateway monitors run beside the rate, each replaced by a fresh one when it finishes.

With a second client for the billing app (the shop run as two apps), billing's workflows
(``workflows.BILLING``) and the monitors are started on billing's engine, and every order names
billing as the app that invoices it; otherwise everything runs on the one engine.

All engine calls go through a ``DaprWorkflowClient`` from a small thread pool, so a slow call
never delays the schedule; when too many calls are in flight, starts are skipped rather than
queued, which keeps a slow engine from being buried. An unavailable engine is reported once and
probed every few seconds until it answers; the other app's engine, if any, keeps its load.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from dapr.ext.workflow import DaprWorkflowClient, WorkflowStatus

from . import workflows

log = logging.getLogger("devengine.samples.generator")

# --------------------------------------------------------------------------------------------
# The shop's reference data
# --------------------------------------------------------------------------------------------

CUSTOMERS = (
    ("cust-10482", "Lindqvist Arkitekter AB", "ap@lindqvist-ark.example", "SE", "EUR"),
    ("cust-10517", "Harbor & Finch Outfitters", "billing@harborfinch.example", "US", "USD"),
    ("cust-10533", "Maison Delacroix SARL", "compta@maison-delacroix.example", "FR", "EUR"),
    ("cust-10561", "Brightwater Dental Group", "accounts@brightwater.example", "GB", "GBP"),
    ("cust-10602", "Keller & Soehne GmbH", "buchhaltung@keller-soehne.example", "DE", "EUR"),
    ("cust-10648", "Northwind Coworking", "finance@northwind-cowork.example", "US", "USD"),
    ("cust-10671", "Studio Verde Interiors", "admin@studioverde.example", "IT", "EUR"),
    ("cust-10705", "Aoife Byrne", "aoife.byrne@mail.example", "IE", "EUR"),
    ("cust-10739", "Tomasz Wisniewski", "t.wisniewski@mail.example", "PL", "EUR"),
    ("cust-10766", "Priya Raman", "priya.raman@mail.example", "US", "USD"),
)

# (SKU, description, unit price)
PRODUCTS = (
    ("SKU-DSK-OAK-160", "Oak standing desk 160 cm", 749.00),
    ("SKU-CHR-ERG-BLK", "Ergonomic task chair, black", 329.00),
    ("SKU-LMP-ARC-BRS", "Arc floor lamp, brass", 189.00),
    ("SKU-SHF-WAL-090", "Walnut wall shelf 90 cm", 119.00),
    ("SKU-RUG-WOL-200", "Wool rug 200 x 300 cm", 459.00),
    ("SKU-SOF-3S-GRY", "Three-seat sofa, grey", 1299.00),
    ("SKU-TBL-DIN-180", "Dining table 180 cm", 899.00),
    ("SKU-CAB-FIL-3DR", "Three-drawer filing cabinet", 249.00),
)
ACCESSORIES = (
    ("SKU-CUS-LIN-045", "Linen cushion 45 cm", 29.90),
    ("SKU-MON-ARM-DUO", "Dual monitor arm", 139.00),
    ("SKU-PLT-POT-030", "Ceramic planter 30 cm", 34.50),
    ("SKU-CBL-TRY-120", "Under-desk cable tray", 24.90),
    ("SKU-LMP-DSK-WHT", "Desk lamp, white", 59.00),
)

APPROVERS = ("m.keller", "s.okafor", "j.lindgren", "a.moreau")
REJECTIONS = (
    "customer is over their credit limit",
    "duplicate of an order placed this morning",
    "discount exceeds what sales may grant",
)
CARRIERS = ("DHL Express", "UPS", "DPD", "PostNL")
CARD_BRANDS = ("visa", "mastercard", "amex")
PLANS = (("Design Studio annual", 588.00), ("Workspace Planner annual", 228.00))
GATEWAYS = ("adyen-eu", "stripe-us", "paypal-global")
LEDGERS = ("netsuite-emea", "netsuite-us")

# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------

# scenario -> (workflow, id prefix, copies per deck). One deck of 40 takes 20 s at rate 2.
SCENARIOS: dict[str, tuple[Callable[..., Any], str, int]] = {
    "order_approved": (workflows.process_order, "order", 6),
    "order_rejected": (workflows.process_order, "order", 2),
    "order_expires": (workflows.process_order, "order", 2),
    "order_small": (workflows.process_order, "order", 2),
    "fulfillment": (workflows.fulfill_order, "fulfillment", 5),
    "invoice_flaky_ledger": (workflows.settle_invoice, "invoice", 3),
    "invoice": (workflows.settle_invoice, "invoice", 1),
    "payment": (workflows.authorize_payment, "payment", 3),
    "payment_declined": (workflows.authorize_payment, "payment", 2),
    "shipment": (workflows.ship_order, "shipment", 4),
    "shipment_cancelled": (workflows.ship_order, "shipment", 1),
    "renewal_confirmed": (workflows.renew_subscription, "renewal", 3),
    "renewal_declined": (workflows.renew_subscription, "renewal", 1),
    "renewal_paused": (workflows.renew_subscription, "renewal", 1),
    "renewal_paused_resumed": (workflows.renew_subscription, "renewal", 1),
    "renewal_terminated": (workflows.renew_subscription, "renewal", 1),
    "renewal_waiting": (workflows.renew_subscription, "renewal", 2),
}

MONITOR_INTERVAL_SECONDS = 10
MONITOR_MAX_RUNS = 4
MONITOR_CHECK_EVERY = 30.0
REPORT_EVERY = 60.0
MAX_IN_FLIGHT = 32
PROBE_EVERY = 5.0
RETRY_DUE_AFTER = 1.0
# Seconds after its start that a renewal left waiting is answered (see _answer_late): long
# enough to see it waiting, or paused, in the console for a while.
LATE_ANSWER_AFTER = (600.0, 1200.0)

# Instance ids look like "order-20261123-00042": prefix, UTC date, sequence per prefix and day.
_ID_PATTERN = re.compile(r"^(?P<prefix>[a-z][a-z0-9-]*)-(?P<day>\d{8})-(?P<seq>\d+)$")


class InstanceIds:
    """Hands out readable, unique instance ids.

    Starting an id whose instance has finished replaces it (its history is reset), so a restarted
    generator must not count from 1 again: ``seed`` continues after the highest sequence already
    on the engine.
    """

    def __init__(self, today: Callable[[], str]) -> None:
        self._today = today
        self._last: dict[tuple[str, str], int] = {}
        self._floor = 0

    def seed(self, existing: Iterable[str]) -> int:
        """Continue after the ids in ``existing``; returns how many ids were read."""
        count = 0
        for instance_id in existing:
            count += 1
            match = _ID_PATTERN.match(instance_id)
            if match:
                key = (match["prefix"], match["day"])
                self._last[key] = max(self._last.get(key, 0), int(match["seq"]))
        return count

    def seed_from_clock(self, now: datetime) -> None:
        """Without a listing, start from the time of day so that a restart rarely collides."""
        self._floor = (now.hour * 3600 + now.minute * 60 + now.second) * 10

    def latest(self, prefix: str) -> str | None:
        """Today's highest id with this prefix, if the engine or this process has one."""
        key = (prefix, self._today())
        return f"{prefix}-{key[1]}-{self._last[key]:05d}" if key in self._last else None

    def next(self, prefix: str) -> str:
        key = (prefix, self._today())
        seq = max(self._last.get(key, 0), self._floor) + 1
        self._last[key] = seq
        return f"{prefix}-{key[1]}-{seq:05d}"


@dataclass
class Plan:
    """What to start, and what the people around it do afterwards (delays in seconds)."""

    workflow: Callable[..., Any]
    input: dict[str, Any]
    follow_ups: list[tuple[float, str, Callable[[str], None]]] = field(default_factory=list)


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    label: str = field(compare=False)
    action: Callable[[], None] = field(compare=False)


class LoadGenerator:
    """Runs until ``stop`` is set. Call ``run`` in its own thread."""

    def __init__(
        self,
        client: DaprWorkflowClient,
        *,
        billing: DaprWorkflowClient | None = None,
        rate: float,
        stop: threading.Event,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monitors: bool = True,
    ) -> None:
        self.client = client
        self.billing = billing or client
        # Orders name the billing app only when it is another app, as a real team's would.
        self.billing_app = workflows.BILLING_APP_ID if billing else None
        self.rate = rate
        self.stop = stop
        self.rng = rng or random.Random()
        self.clock = clock
        self.now = now
        self.monitors = monitors
        self.ids = InstanceIds(lambda: self.now().strftime("%Y%m%d"))
        self.started: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.skipped = 0
        # The engines that failed as unavailable, and when to probe each again with a start.
        self.engines_down: set[str] = set()
        self._next_probe: dict[str, float] = {}
        self._deck: list[str] = []
        self._due: list[_Due] = []
        self._due_seq = itertools.count()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._monitor_ids: dict[str, str] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="samples-call")

    # ---- main loop -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._seed_ids()
            interval = 1.0 / self.rate if self.rate > 0 else None
            next_start = self.clock()
            next_report = self.clock() + REPORT_EVERY
            next_monitor_check = self.clock()
            while not self.stop.is_set():
                now = self.clock()
                self._run_due(now)
                if interval is not None and now >= next_start:
                    self.start_next()
                    # After a stall, carry on at the rate instead of bursting to catch up.
                    next_start = max(next_start + interval, now - interval)
                if self.monitors and now >= next_monitor_check:
                    self._submit("check monitors", self._keep_monitors_running, self.billing)
                    next_monitor_check = now + MONITOR_CHECK_EVERY
                if now >= next_report:
                    self._report()
                    next_report = now + REPORT_EVERY
                wake = min(next_report, next_monitor_check)
                if interval is not None:
                    wake = min(wake, next_start)
                with self._lock:
                    if self._due:
                        wake = min(wake, self._due[0].at)
                self.stop.wait(min(max(wake - self.clock(), 0.01), 0.5))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._report()

    def _seed_ids(self) -> None:
        try:
            count = self.ids.seed(self.client.iter_workflow_instance_ids(page_size=1000))
            if self.billing is not self.client:
                count += self.ids.seed(self.billing.iter_workflow_instance_ids(page_size=1000))
            log.info("the engines hold %d instance(s); new ids continue after them", count)
            # A restart adopts the monitors the last run left running instead of doubling them.
            for gateway in GATEWAYS:
                latest = self.ids.latest(f"monitor-{gateway}")
                if latest:
                    self._monitor_ids[gateway] = latest
        except Exception as exc:  # noqa: BLE001 - any failure: fall back, the ids stay readable
            log.warning("could not list instances (%s); numbering ids from the clock", exc)
            self.ids.seed_from_clock(self.now())

    def _run_due(self, now: float) -> None:
        while True:
            with self._lock:
                if not self._due or self._due[0].at > now:
                    return
                item = heapq.heappop(self._due)
            if not self._submit(item.label, item.action):
                # Too many calls in flight: come back to it rather than lose an approval. Starts
                # are skipped meanwhile, so these retries cannot pile up without bound.
                self.schedule(RETRY_DUE_AFTER, item.label, item.action)
                return

    def schedule(self, delay: float, label: str, action: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(
                self._due, _Due(self.clock() + delay, next(self._due_seq), label, action)
            )

    @property
    def engine_down(self) -> bool:
        return bool(self.engines_down)

    def _client_for(self, workflow: Callable[..., Any]) -> DaprWorkflowClient:
        return self.billing if workflow in workflows.BILLING.workflows else self.client

    def _engine_name(self, client: DaprWorkflowClient) -> str:
        if self.billing is self.client:
            return "the engine"
        return "the billing engine" if client is self.billing else "the orders engine"

    def _probes(self, engine: str) -> bool:
        """Whether a start may go to ``engine``: always while it answers, and while it is down
        one every few seconds, to find out when it is back."""
        if engine not in self.engines_down:
            return True
        now = self.clock()
        if now < self._next_probe.get(engine, now):
            return False
        self._next_probe[engine] = now + PROBE_EVERY
        return True

    def _submit(
        self, label: str, action: Callable[[], None], client: DaprWorkflowClient | None = None
    ) -> bool:
        """Run ``action`` (a call to ``client``'s engine, the orders' one by default) in the pool;
        False when too many calls are in flight."""
        engine = self._engine_name(client or self.client)
        with self._lock:
            if self._in_flight >= MAX_IN_FLIGHT:
                return False
            self._in_flight += 1

        def call() -> None:
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - one failed call must not stop the demo
                self._failed(label, engine, exc)
            else:
                with self._lock:
                    back = engine in self.engines_down
                    self.engines_down.discard(engine)
                if back:
                    log.info("%s answers again: resuming its load", engine)
            finally:
                with self._lock:
                    self._in_flight -= 1

        self._pool.submit(call)
        return True

    def _failed(self, label: str, engine: str, exc: Exception) -> None:
        if _is_unavailable(exc):
            # One line per outage, not one per call: the SDK worker already reports reconnects.
            with self._lock:
                first = engine not in self.engines_down
                self.engines_down.add(engine)
                self._next_probe[engine] = self.clock() + PROBE_EVERY
            if first:
                log.warning("%s failed: %s is unavailable; pausing its load", label, engine)
            self._count(self.actions, "lost while the engine was down")
            return
        log.warning("%s failed: %s", label, _describe(exc))

    def _count(self, counter: Counter[str], key: str) -> None:
        # Pool threads and the scheduler both count; Counter updates are not atomic.
        with self._lock:
            counter[key] += 1

    def _report(self) -> None:
        total = sum(self.started.values())
        if not total and not self.actions:
            return
        started = ", ".join(f"{k} {v}" for k, v in sorted(self.started.items()))
        acted = ", ".join(f"{k} {v}" for k, v in sorted(self.actions.items())) or "none"
        log.info(
            "started %d workflow(s) so far (%s); operator actions: %s%s",
            total,
            started,
            acted,
            f"; skipped {self.skipped} start(s) under load" if self.skipped else "",
        )

    # ---- starting workflows ----------------------------------------------------------------

    def draw(self) -> str:
        """The next scenario from the deck, reshuffling a full deck when it runs out."""
        if not self._deck:
            self._deck = [name for name, (_, _, n) in SCENARIOS.items() for _ in range(n)]
            self.rng.shuffle(self._deck)
        return self._deck.pop()

    def start_next(self) -> None:
        scenario = self.draw()
        workflow, prefix, _ = SCENARIOS[scenario]
        client = self._client_for(workflow)
        if not self._probes(self._engine_name(client)):
            self._count(self.actions, "lost while the engine was down")
            return
        instance_id = self.ids.next(prefix)
        plan = self.plan(scenario, instance_id)
        if not self._submit(f"start {instance_id}", lambda: self._start(instance_id, plan), client):
            self.skipped += 1

    def _start(self, instance_id: str, plan: Plan) -> None:
        client = self._client_for(plan.workflow)
        client.schedule_new_workflow(plan.workflow, input=plan.input, instance_id=instance_id)
        self._count(self.started, plan.workflow.__name__)
        for delay, label, action in plan.follow_ups:
            self.schedule(delay, f"{label} {instance_id}", functools.partial(action, instance_id))

    def plan(self, scenario: str, instance_id: str) -> Plan:
        """Build the workflow input and follow-ups for one scenario."""
        rng = self.rng
        if scenario.startswith("order_"):
            order = self.make_order(instance_id, large=scenario != "order_small")
            if self.billing_app:
                order["billing_app"] = self.billing_app
            plan = Plan(workflows.process_order, order)
            delay = rng.uniform(2, 20)
            if scenario == "order_approved":
                decision = {
                    "approved": True,
                    "approver": rng.choice(APPROVERS),
                    "comment": "approved",
                }
                plan.follow_ups.append(
                    (delay, "approve", self._raiser(workflows.APPROVAL_EVENT, decision))
                )
            elif scenario == "order_rejected":
                decision = {
                    "approved": False,
                    "approver": rng.choice(APPROVERS),
                    "comment": rng.choice(REJECTIONS),
                }
                plan.follow_ups.append(
                    (delay, "reject", self._raiser(workflows.APPROVAL_EVENT, decision))
                )
            return plan
        if scenario == "fulfillment":
            order_id = self._reference("order")
            return Plan(workflows.fulfill_order, self.make_order(order_id, large=True))
        if scenario.startswith("invoice"):
            return Plan(
                workflows.settle_invoice,
                self.make_invoice(instance_id, flaky=scenario == "invoice_flaky_ledger"),
            )
        if scenario.startswith("payment"):
            return Plan(
                workflows.authorize_payment,
                self.make_payment(instance_id, declined=scenario == "payment_declined"),
            )
        if scenario == "shipment":
            return Plan(workflows.ship_order, self.make_shipment(instance_id))
        if scenario == "shipment_cancelled":
            # Slow packages, so they are still on the road when the customer cancels; the
            # terminate is recursive and ends the package workflows too.
            shipment = self.make_shipment(instance_id, stage_seconds=(3, 8))
            output = {
                "reason": "order cancelled by customer before delivery",
                "ticket": f"SUP-{rng.randint(40000, 49999)}",
            }
            return Plan(
                workflows.ship_order,
                shipment,
                [(rng.uniform(3, 6), "cancel shipment", lambda iid: self._terminate(iid, output))],
            )
        return self._renewal_plan(scenario, instance_id)

    def _renewal_plan(self, scenario: str, instance_id: str) -> Plan:
        rng = self.rng
        plan = Plan(workflows.renew_subscription, self.make_subscription(instance_id))
        # Nobody answers these within the scenario: they wait (or stay paused) for a while.
        left_waiting = scenario in ("renewal_waiting", "renewal_paused", "renewal_paused_resumed")
        if scenario == "renewal_confirmed":
            answer = {"renew": True, "channel": rng.choice(("email link", "customer portal"))}
            plan.follow_ups.append(
                (
                    rng.uniform(5, 40),
                    "confirm renewal",
                    self._raiser(workflows.RENEWAL_EVENT, answer),
                )
            )
        elif scenario == "renewal_declined":
            answer = {"renew": False, "reason": "switching to a cheaper plan"}
            plan.follow_ups.append(
                (
                    rng.uniform(5, 30),
                    "decline renewal",
                    self._raiser(workflows.RENEWAL_EVENT, answer),
                )
            )
        elif scenario in ("renewal_paused", "renewal_paused_resumed"):
            pause_after = rng.uniform(4, 15)
            plan.follow_ups.append((pause_after, "pause", self._pause))
            if scenario == "renewal_paused_resumed":
                resume_after = pause_after + rng.uniform(10, 30)
                if rng.random() < 0.5:
                    # The customer answers while the renewal is paused: the SDK holds the event
                    # until the resume, and the renewal completes right after it.
                    left_waiting = False
                    answer = {"renew": True, "channel": "customer portal"}
                    plan.follow_ups.append(
                        (
                            (pause_after + resume_after) / 2,
                            "confirm paused renewal",
                            self._raiser(workflows.RENEWAL_EVENT, answer),
                        )
                    )
                plan.follow_ups.append((resume_after, "resume", self._resume))
        elif scenario == "renewal_terminated":
            output = {
                "reason": "account closed by support",
                "ticket": f"SUP-{rng.randint(40000, 49999)}",
            }
            if rng.random() < 0.5:
                # Paused for review first, then closed: a terminate while suspended.
                plan.follow_ups.append((rng.uniform(3, 6), "pause", self._pause))
                terminate_after = rng.uniform(8, 20)
            else:
                terminate_after = rng.uniform(5, 20)
            plan.follow_ups.append(
                (terminate_after, "terminate", lambda iid: self._terminate(iid, output))
            )
        if left_waiting:
            self._answer_late(plan)
        return plan

    def _answer_late(self, plan: Plan) -> None:
        """The customer answers a renewal left waiting, a quarter of an hour or so later (support
        first resumes one still paused). Left to its seven-day timeout, or paused for good, every
        such renewal would stay non-terminal: a run left up all day would pile up thousands, each
        re-read by the console's indexer every few seconds (and the engines' and indexer's CPU
        with them)."""
        rng = self.rng
        answered_after = rng.uniform(*LATE_ANSWER_AFTER)
        answer = {"renew": rng.random() < 0.5, "channel": "phone, after a reminder call"}
        if plan.follow_ups and plan.follow_ups[-1][1] == "pause":
            plan.follow_ups.append((answered_after - 5, "resume", self._resume))
        plan.follow_ups.append(
            (answered_after, "late answer to", self._raiser(workflows.RENEWAL_EVENT, answer))
        )

    # ---- what the people around the workflows do -------------------------------------------

    def _raiser(self, event: str, data: dict[str, Any]) -> Callable[[str], None]:
        def raise_event(instance_id: str) -> None:
            self.client.raise_workflow_event(instance_id, event, data=data)
            self._count(self.actions, f"raise {event}")

        return raise_event

    def _status(
        self, instance_id: str, client: DaprWorkflowClient | None = None
    ) -> WorkflowStatus | None:
        state = (client or self.client).get_workflow_state(instance_id, fetch_payloads=False)
        return state.runtime_status if state else None

    def _pause(self, instance_id: str) -> None:
        status = self._status(instance_id)
        if status is not WorkflowStatus.RUNNING:
            log.info("not pausing %s: it is %s", instance_id, _name(status))
            return
        self.client.pause_workflow(instance_id)
        self._count(self.actions, "pause")
        log.info("support paused %s (billing dispute under review)", instance_id)

    def _resume(self, instance_id: str) -> None:
        # The SDK fails a workflow that is resumed while not suspended: look before acting.
        status = self._status(instance_id)
        if status is not WorkflowStatus.SUSPENDED:
            log.info("not resuming %s: it is %s", instance_id, _name(status))
            return
        self.client.resume_workflow(instance_id)
        self._count(self.actions, "resume")
        log.info("support resumed %s (dispute settled)", instance_id)

    def _terminate(self, instance_id: str, output: dict[str, Any]) -> None:
        status = self._status(instance_id)
        if status not in (WorkflowStatus.RUNNING, WorkflowStatus.SUSPENDED, WorkflowStatus.PENDING):
            log.info("not terminating %s: it is %s", instance_id, _name(status))
            return
        self.client.terminate_workflow(instance_id, output=output)
        self._count(self.actions, "terminate")
        log.info("support terminated %s (%s)", instance_id, output["reason"])

    def _keep_monitors_running(self) -> None:
        """Start a monitor for every gateway that has none running (they end after a while)."""
        for gateway in GATEWAYS:
            if self.stop.is_set():
                return
            current = self._monitor_ids.get(gateway)
            if current and self._status(current, self.billing) in (
                WorkflowStatus.RUNNING,
                WorkflowStatus.PENDING,
                WorkflowStatus.SUSPENDED,
            ):
                continue
            instance_id = self.ids.next(f"monitor-{gateway}")
            state = {
                "gateway": gateway,
                "run": 1,
                "max_runs": MONITOR_MAX_RUNS,
                "checks": 0,
                "degraded": 0,
                "interval_seconds": MONITOR_INTERVAL_SECONDS,
            }
            self.billing.schedule_new_workflow(
                workflows.monitor_payment_gateway, input=state, instance_id=instance_id
            )
            self._monitor_ids[gateway] = instance_id
            self._count(self.started, "monitor_payment_gateway")

    # ---- business data ---------------------------------------------------------------------

    def _customer(self) -> dict[str, Any]:
        cid, name, email, country, currency = self.rng.choice(CUSTOMERS)
        return {"id": cid, "name": name, "email": email, "country": country, "currency": currency}

    def _reference(self, prefix: str) -> str:
        """An id of a record outside the workflows (an order the payment or invoice is for)."""
        return f"{prefix}-{self.now():%Y%m%d}-{self.rng.randint(1, 99999):05d}"

    def make_order(self, order_id: str, *, large: bool) -> dict[str, Any]:
        rng = self.rng
        customer = self._customer()
        catalogue = PRODUCTS if large else ACCESSORIES
        lines: list[dict[str, Any]] = []
        for sku, description, price in rng.sample(catalogue, rng.randint(1, 4)):
            lines.append(
                {
                    "sku": sku,
                    "description": description,
                    "quantity": rng.randint(1, 3 if large else 2),
                    "unit_price": price,
                }
            )
        total = round(sum(line["quantity"] * line["unit_price"] for line in lines), 2)
        if large and total < workflows.APPROVAL_THRESHOLD:
            # A single cheap line can land under the threshold: make it a bulk order.
            lines[0]["quantity"] += 2
            total = round(sum(line["quantity"] * line["unit_price"] for line in lines), 2)
        elif not large and total >= workflows.APPROVAL_THRESHOLD:
            lines = lines[:1]
            lines[0]["quantity"] = 1
            total = lines[0]["unit_price"]
        return {
            "order_id": order_id,
            "customer": customer,
            "items": lines,
            "total": total,
            "currency": customer["currency"],
            "channel": rng.choice(("web", "web", "sales-rep", "marketplace")),
        }

    def make_invoice(self, invoice_id: str, *, flaky: bool) -> dict[str, Any]:
        customer = self._customer()
        issued = self.now()
        return {
            "invoice_id": invoice_id,
            "order_id": self._reference("order"),
            "customer": customer,
            "amount": round(self.rng.uniform(80, 4800), 2),
            "currency": customer["currency"],
            "ledger": workflows.FLAKY_LEDGER if flaky else self.rng.choice(LEDGERS),
            "issued_on": issued.date().isoformat(),
            "due_on": (issued + timedelta(days=30)).date().isoformat(),
        }

    def make_payment(self, payment_id: str, *, declined: bool) -> dict[str, Any]:
        rng = self.rng
        customer = self._customer()
        # Other cards end in 1000-9999, so only the declined scenario uses the decline card.
        last4 = workflows.DECLINED_CARD_LAST4 if declined else str(rng.randint(1000, 9999))
        return {
            "payment_id": payment_id,
            "order_id": self._reference("order"),
            "customer_id": customer["id"],
            "amount": round(rng.uniform(25, 2600), 2),
            "currency": customer["currency"],
            "card": {
                "brand": rng.choice(CARD_BRANDS),
                "last4": last4,
                "expiry": f"{rng.randint(1, 12):02d}/{rng.randint(27, 31)}",
            },
        }

    def make_shipment(
        self, shipment_id: str, stage_seconds: tuple[int, int] = (1, 6)
    ) -> dict[str, Any]:
        rng = self.rng
        packages = []
        for n in range(1, rng.randint(1, 3) + 1):
            carrier = rng.choice(CARRIERS)
            packages.append(
                {
                    "package_id": f"{shipment_id}-P{n}",
                    "carrier": carrier,
                    "tracking_number": _tracking_number(rng, carrier),
                    "weight_kg": round(rng.uniform(0.8, 38.0), 1),
                    # Seconds spent in each tracking stage: short, so a run shows every stage.
                    "stage_seconds": [
                        rng.randint(*stage_seconds) for _ in workflows.TRACKING_STAGES
                    ],
                }
            )
        return {
            "shipment_id": shipment_id,
            "order_id": self._reference("order"),
            "customer": self._customer(),
            "packages": packages,
        }

    def make_subscription(self, renewal_id: str) -> dict[str, Any]:
        customer = self._customer()
        plan, price = self.rng.choice(PLANS)
        renews_until = (self.now() + timedelta(days=365)).date().isoformat()
        return {
            "subscription_id": f"sub-{self.rng.randint(20000, 69999)}",
            "renewal_id": renewal_id,
            "customer_id": customer["id"],
            "email": customer["email"],
            "plan": plan,
            "price": price,
            "currency": customer["currency"],
            "renews_until": renews_until,
        }


def _tracking_number(rng: random.Random, carrier: str) -> str:
    if carrier == "UPS":
        return f"1Z{rng.randint(0, 999999):06d}{rng.randint(0, 9999999999):010d}"
    if carrier == "PostNL":
        return f"3SABCD{rng.randint(0, 999999999):09d}"
    return f"{rng.randint(0, 10**10 - 1):010d}"


def _name(status: WorkflowStatus | None) -> str:
    return status.name if status else "gone"


def _is_unavailable(exc: BaseException) -> bool:
    code = getattr(exc, "code", None)
    return callable(code) and code() == grpc.StatusCode.UNAVAILABLE


def _describe(exc: BaseException) -> str:
    """gRPC errors print as a page of debug text; keep the status code and details."""
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code()}: {details()}"
    return f"{type(exc).__name__}: {exc}"
