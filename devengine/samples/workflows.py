"""The sample business: workflows and activities of a small online furniture shop.

Every workflow here shows one thing a workflow console has to render, written the way a real
team would write it with the Dapr Python SDK:

- ``process_order``: a manager's approval (an external event) raced against a timer; a confirmed
  order is invoiced by ``settle_invoice`` as a child workflow, on the billing app when the shop
  runs as two apps.
- ``fulfill_order``: fan-out/fan-in, one inventory reservation per line item in parallel.
- ``settle_invoice``: an activity that fails twice and succeeds on the third attempt under a
  ``RetryPolicy`` (a flaky legacy ledger).
- ``ship_order``: child workflows, one ``track_package`` per package.
- ``track_package``: a custom status updated at every tracking stage ("picked", "packed", ...).
- ``monitor_payment_gateway``: a health monitor that continues as new every few checks and stops
  after a bounded number of runs.
- ``authorize_payment``: fails with a stack trace when the card is declined (an activity raises,
  no retry, the workflow compensates and raises).
- ``renew_subscription``: waits up to seven days for the customer's confirmation.

Workflows are deterministic: anything that varies (durations, which card is declined, which
ledger is flaky) travels in the input, which the load generator chooses. Activities may run more
than once (delivery is at least once), so they are idempotent or keyed by instance.

The shop runs as one app (everything on one worker) or as two, the way the teams split it:
billing (invoices, payments and the gateway monitor: ``BILLING``) and orders (the rest:
``ORDERS``), each with its own worker and engine. An order carries the app id of billing in
``billing_app`` when the shop runs as two apps; without it, the invoice is settled on the order's
own app. Nothing is registered at import time: ``register(runtime, app=...)`` adds an app's
workflows and activities to a ``WorkflowRuntime``.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Callable, Generator
from datetime import date, timedelta
from typing import Any, NamedTuple

from dapr.ext.workflow import (
    DaprWorkflowContext,
    RetryPolicy,
    TaskFailedError,
    WorkflowActivityContext,
    WorkflowRuntime,
    when_all,
    when_any,
)

# Event names the load generator raises; the SDK matches them case-insensitively.
APPROVAL_EVENT = "approval_decision"
RENEWAL_EVENT = "renewal_confirmed"

# Orders at or above this total wait for a manager. Below it they are approved automatically.
APPROVAL_THRESHOLD = 250.00
# A real shop would give a manager a day; the demo uses 30 s so that expired orders show up
# within the first minute of a run.
APPROVAL_TIMEOUT = timedelta(seconds=30)
RENEWAL_TIMEOUT = timedelta(days=7)

# The legacy ledger drops the first two postings of every invoice; the others never fail.
FLAKY_LEDGER = "sap-ecc-legacy"
LEDGER_FAILURES_BEFORE_SUCCESS = 2
# Two failures need two retries; the spare attempts absorb a worker restart mid-invoice, which
# resets the in-process attempt counter below.
LEDGER_RETRY = RetryPolicy(
    first_retry_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=20),
    max_number_of_attempts=6,
)

# The card number every payment provider documents as "always declined" ends in 0002.
DECLINED_CARD_LAST4 = "0002"

# Confirmed orders are booked in the ledger of their currency's region.
ORDER_LEDGERS = {"USD": "netsuite-us"}
DEFAULT_ORDER_LEDGER = "netsuite-emea"
INVOICE_PAYMENT_TERMS = timedelta(days=30)

TRACKING_STAGES = ("picked", "packed", "in transit", "out for delivery")
MONITOR_CHECKS_PER_RUN = 3

Task = Any  # the SDK's task type; workflows only yield them back to the runtime
WorkflowGen = Generator[Task, Any, Any]


class PaymentDeclinedError(Exception):
    """The card issuer refused the charge. Not retried: asking again gives the same answer."""


class LedgerUnavailableError(Exception):
    """The ledger dropped the connection. Transient, so the workflow retries the posting."""


# --------------------------------------------------------------------------------------------
# Helpers shared with the load generator
# --------------------------------------------------------------------------------------------


def needs_approval(order: dict[str, Any]) -> bool:
    """Whether an order waits for a manager (the generator uses this to decide whom to answer)."""
    return float(order["total"]) >= APPROVAL_THRESHOLD


def _stable_fraction(*parts: object) -> float:
    """A number in [0, 1) that is the same for the same inputs in every process and replay."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _simulate_latency(*parts: object, low: float = 0.02, high: float = 0.25) -> None:
    """Sleep like a remote call would. Derived from the inputs so a re-run behaves the same."""
    time.sleep(low + (high - low) * _stable_fraction(*parts))


# --------------------------------------------------------------------------------------------
# Order approval: an external event raced against a timer
# --------------------------------------------------------------------------------------------


def process_order(ctx: DaprWorkflowContext, order: dict[str, Any]) -> WorkflowGen:
    """Validate an order, get a manager's decision if it is large, then confirm or cancel it."""
    order_id = order["order_id"]
    yield ctx.call_activity(validate_order, input=order)

    if not needs_approval(order):
        decision = {"approved": True, "approver": "auto-approval", "comment": "below threshold"}
    else:
        yield ctx.call_activity(
            request_manager_approval,
            input={"order_id": order_id, "total": order["total"], "currency": order["currency"]},
        )
        approval = ctx.wait_for_external_event(APPROVAL_EVENT)
        deadline = ctx.create_timer(APPROVAL_TIMEOUT)
        winner = yield when_any([approval, deadline])
        if winner is deadline:
            yield ctx.call_activity(
                cancel_order, input={"order_id": order_id, "reason": "approval timed out"}
            )
            return {"order_id": order_id, "status": "expired", "reason": "approval timed out"}
        decision = approval.get_result() or {}

    if not decision.get("approved"):
        reason = decision.get("comment") or "rejected by manager"
        yield ctx.call_activity(cancel_order, input={"order_id": order_id, "reason": reason})
        return {
            "order_id": order_id,
            "status": "rejected",
            "approver": decision.get("approver"),
            "reason": reason,
        }

    confirmation = yield ctx.call_activity(confirm_order, input=order)
    # Billing's workflow, called by name as another team's would be; app_id None runs it here.
    invoice = yield ctx.call_child_workflow(
        "settle_invoice",
        input=invoice_for_order(order, ctx.current_utc_datetime.date()),
        app_id=order.get("billing_app"),
    )
    return {
        "order_id": order_id,
        "status": "confirmed",
        "approver": decision.get("approver"),
        "confirmation_number": confirmation["confirmation_number"],
        "invoice_id": invoice["invoice_id"],
        "total": order["total"],
        "currency": order["currency"],
    }


def invoice_for_order(order: dict[str, Any], issued_on: date) -> dict[str, Any]:
    """The invoice of a confirmed order, as ``settle_invoice`` takes it."""
    return {
        "invoice_id": f"INV-{order['order_id'][-14:]}",
        "order_id": order["order_id"],
        "customer": order["customer"],
        "amount": order["total"],
        "currency": order["currency"],
        "ledger": ORDER_LEDGERS.get(order["currency"], DEFAULT_ORDER_LEDGER),
        "issued_on": issued_on.isoformat(),
        "due_on": (issued_on + INVOICE_PAYMENT_TERMS).isoformat(),
    }


def validate_order(ctx: WorkflowActivityContext, order: dict[str, Any]) -> dict[str, Any]:
    """Check the lines add up to the total; a mismatch is a bug upstream, so it raises."""
    _simulate_latency(ctx.workflow_id, "validate")
    lines_total = round(sum(i["quantity"] * i["unit_price"] for i in order["items"]), 2)
    if abs(lines_total - float(order["total"])) > 0.01:
        raise ValueError(
            f"order {order['order_id']}: lines sum to {lines_total}, not {order['total']}"
        )
    return {"order_id": order["order_id"], "valid": True, "lines": len(order["items"])}


def request_manager_approval(
    ctx: WorkflowActivityContext, request: dict[str, Any]
) -> dict[str, Any]:
    """Post the approval request to the managers' queue (simulated)."""
    _simulate_latency(ctx.workflow_id, "approval-request")
    return {"order_id": request["order_id"], "queue": "sales-managers-emea", "notified": True}


def confirm_order(ctx: WorkflowActivityContext, order: dict[str, Any]) -> dict[str, Any]:
    """Mark the order confirmed in the order system and email the customer."""
    _simulate_latency(ctx.workflow_id, "confirm")
    number = int(_stable_fraction(order["order_id"], "confirmation") * 1_000_000)
    return {"order_id": order["order_id"], "confirmation_number": f"CNF-{number:06d}"}


def cancel_order(ctx: WorkflowActivityContext, request: dict[str, Any]) -> dict[str, Any]:
    """Cancel the order and release anything held for it."""
    _simulate_latency(ctx.workflow_id, "cancel")
    return {"order_id": request["order_id"], "cancelled": True, "reason": request["reason"]}


# --------------------------------------------------------------------------------------------
# Fulfilment: fan-out/fan-in
# --------------------------------------------------------------------------------------------


def fulfill_order(ctx: DaprWorkflowContext, order: dict[str, Any]) -> WorkflowGen:
    """Reserve stock for every line in parallel, then build one pick list from the results."""
    reservations = yield when_all(
        [
            ctx.call_activity(
                reserve_inventory, input={"order_id": order["order_id"], "line": line}
            )
            for line in order["items"]
        ]
    )
    pick_list = yield ctx.call_activity(
        create_pick_list, input={"order_id": order["order_id"], "reservations": reservations}
    )
    return {
        "order_id": order["order_id"],
        "status": "ready to pick",
        "pick_list_id": pick_list["pick_list_id"],
        "warehouses": pick_list["warehouses"],
        "units": pick_list["units"],
    }


def reserve_inventory(ctx: WorkflowActivityContext, request: dict[str, Any]) -> dict[str, Any]:
    """Hold stock for one line; keyed by (order, SKU), so a re-delivery holds nothing twice."""
    line = request["line"]
    _simulate_latency(request["order_id"], line["sku"], high=0.4)
    warehouses = ("DC-ROTTERDAM", "DC-LEIPZIG", "DC-LYON")
    warehouse = warehouses[int(_stable_fraction(line["sku"]) * len(warehouses))]
    return {
        "sku": line["sku"],
        "quantity": line["quantity"],
        "warehouse": warehouse,
        "reservation_id": f"RSV-{request['order_id'][-5:]}-{line['sku'][-6:]}",
    }


def create_pick_list(ctx: WorkflowActivityContext, request: dict[str, Any]) -> dict[str, Any]:
    """Group the reservations by warehouse into one pick list."""
    _simulate_latency(ctx.workflow_id, "pick-list")
    reservations = request["reservations"]
    return {
        "pick_list_id": f"PL-{request['order_id'][-14:]}",
        "warehouses": sorted({r["warehouse"] for r in reservations}),
        "units": sum(r["quantity"] for r in reservations),
    }


# --------------------------------------------------------------------------------------------
# Invoices: an activity that fails twice and succeeds on retry
# --------------------------------------------------------------------------------------------

# Attempts per invoice instance, kept in this process: the ledger "recovers" on the third try.
# Keyed by instance id because every invoice posts exactly once per workflow.
_ledger_attempts: dict[str, int] = {}
_ledger_lock = threading.Lock()


def settle_invoice(ctx: DaprWorkflowContext, invoice: dict[str, Any]) -> WorkflowGen:
    """Post the invoice to the ledger (retrying while it is unavailable), then email it."""
    entry = yield ctx.call_activity(
        post_invoice_to_ledger, input=invoice, retry_policy=LEDGER_RETRY
    )
    yield ctx.call_activity(
        send_invoice_email,
        input={"invoice_id": invoice["invoice_id"], "email": invoice["customer"]["email"]},
    )
    return {
        "invoice_id": invoice["invoice_id"],
        "status": "settled",
        "ledger": invoice["ledger"],
        "journal_entry": entry["journal_entry"],
        "amount": invoice["amount"],
        "currency": invoice["currency"],
    }


def post_invoice_to_ledger(ctx: WorkflowActivityContext, invoice: dict[str, Any]) -> dict[str, Any]:
    """Book the invoice. The legacy ledger fails the first two attempts of every invoice."""
    _simulate_latency(ctx.workflow_id, "ledger")
    if invoice["ledger"] == FLAKY_LEDGER:
        with _ledger_lock:
            attempt = _ledger_attempts.get(ctx.workflow_id, 0) + 1
            _ledger_attempts[ctx.workflow_id] = attempt
        if attempt <= LEDGER_FAILURES_BEFORE_SUCCESS:
            raise LedgerUnavailableError(
                f"ledger {FLAKY_LEDGER} reset the connection while booking "
                f"{invoice['invoice_id']} (attempt {attempt})"
            )
        with _ledger_lock:
            _ledger_attempts.pop(ctx.workflow_id, None)
    number = int(_stable_fraction(invoice["invoice_id"], "journal") * 10_000_000)
    return {"invoice_id": invoice["invoice_id"], "journal_entry": f"JE-{number:07d}"}


def send_invoice_email(ctx: WorkflowActivityContext, request: dict[str, Any]) -> dict[str, Any]:
    """Email the invoice PDF to the customer's billing address."""
    _simulate_latency(ctx.workflow_id, "invoice-email")
    return {"invoice_id": request["invoice_id"], "sent_to": request["email"]}


# --------------------------------------------------------------------------------------------
# Payments: a workflow that fails with a stack trace
# --------------------------------------------------------------------------------------------


def authorize_payment(ctx: DaprWorkflowContext, payment: dict[str, Any]) -> WorkflowGen:
    """Screen and charge a card. A decline releases the order hold and fails the workflow."""
    screening = yield ctx.call_activity(screen_for_fraud, input=payment)
    try:
        charge = yield ctx.call_activity(charge_card, input=payment)
    except TaskFailedError as err:
        # Compensate first, then fail loudly: the failure (with its stack trace) is what the
        # payments team looks at in the console.
        yield ctx.call_activity(
            release_order_hold,
            input={"order_id": payment["order_id"], "reason": "payment declined"},
        )
        raise PaymentDeclinedError(
            f"payment {payment['payment_id']} for order {payment['order_id']} was declined: "
            f"{err.details.message}"
        ) from err
    return {
        "payment_id": payment["payment_id"],
        "order_id": payment["order_id"],
        "status": "captured",
        "authorization_code": charge["authorization_code"],
        "risk_score": screening["risk_score"],
        "amount": payment["amount"],
        "currency": payment["currency"],
    }


def screen_for_fraud(ctx: WorkflowActivityContext, payment: dict[str, Any]) -> dict[str, Any]:
    """Score the payment with the fraud service (simulated)."""
    _simulate_latency(ctx.workflow_id, "fraud")
    score = round(_stable_fraction(payment["payment_id"], "risk") * 40, 1)
    return {"payment_id": payment["payment_id"], "risk_score": score, "decision": "accept"}


def charge_card(ctx: WorkflowActivityContext, payment: dict[str, Any]) -> dict[str, Any]:
    """Charge the card through the acquirer. Declines raise PaymentDeclinedError."""
    _simulate_latency(ctx.workflow_id, "charge", high=0.4)
    card = payment["card"]
    if card["last4"] == DECLINED_CARD_LAST4:
        raise PaymentDeclinedError(
            f"issuer declined {card['brand']} ending {card['last4']} for "
            f"{payment['currency']} {payment['amount']:.2f}: insufficient funds (code 51)"
        )
    code = int(_stable_fraction(payment["payment_id"], "auth") * 1_000_000)
    return {"payment_id": payment["payment_id"], "authorization_code": f"{code:06d}"}


def release_order_hold(ctx: WorkflowActivityContext, request: dict[str, Any]) -> dict[str, Any]:
    """Release the stock held for an order whose payment failed."""
    _simulate_latency(ctx.workflow_id, "release")
    return {"order_id": request["order_id"], "released": True, "reason": request["reason"]}


# --------------------------------------------------------------------------------------------
# Shipping: child workflows, and a custom status updated as a package moves
# --------------------------------------------------------------------------------------------


def ship_order(ctx: DaprWorkflowContext, shipment: dict[str, Any]) -> WorkflowGen:
    """Book a pickup, then follow every package in its own child workflow until delivered."""
    packages = shipment["packages"]
    booking = yield ctx.call_activity(
        book_carrier_pickup,
        input={"shipment_id": shipment["shipment_id"], "packages": len(packages)},
    )
    ctx.set_custom_status(f"{len(packages)} package(s) handed to carriers")
    # Child ids are left to the SDK (<parent>:<action id>), as most applications do.
    deliveries = yield when_all(
        [ctx.call_child_workflow(track_package, input=package) for package in packages]
    )
    ctx.set_custom_status("all packages delivered")
    yield ctx.call_activity(
        notify_customer_delivered,
        input={"shipment_id": shipment["shipment_id"], "email": shipment["customer"]["email"]},
    )
    return {
        "shipment_id": shipment["shipment_id"],
        "order_id": shipment["order_id"],
        "status": "delivered",
        "pickup_reference": booking["pickup_reference"],
        "packages": [d["package_id"] for d in deliveries],
    }


def track_package(ctx: DaprWorkflowContext, package: dict[str, Any]) -> WorkflowGen:
    """Move one package through the tracking stages, publishing each as the custom status."""
    for stage, seconds in zip(TRACKING_STAGES, package["stage_seconds"], strict=True):
        ctx.set_custom_status(stage)
        yield ctx.call_activity(
            record_tracking_event,
            input={"package_id": package["package_id"], "stage": stage},
        )
        yield ctx.create_timer(timedelta(seconds=seconds))
    ctx.set_custom_status("delivered")
    proof = yield ctx.call_activity(
        record_tracking_event,
        input={"package_id": package["package_id"], "stage": "delivered"},
    )
    return {
        "package_id": package["package_id"],
        "carrier": package["carrier"],
        "tracking_number": package["tracking_number"],
        "status": "delivered",
        "event_reference": proof["event_reference"],
    }


def book_carrier_pickup(ctx: WorkflowActivityContext, request: dict[str, Any]) -> dict[str, Any]:
    """Book a pickup slot with the carrier (simulated)."""
    _simulate_latency(ctx.workflow_id, "pickup")
    return {
        "shipment_id": request["shipment_id"],
        "pickup_reference": f"PU-{request['shipment_id'][-14:]}",
    }


def record_tracking_event(ctx: WorkflowActivityContext, event: dict[str, Any]) -> dict[str, Any]:
    """Store a tracking scan. Keyed by (package, stage): a re-delivery records it once."""
    _simulate_latency(event["package_id"], event["stage"])
    reference = int(_stable_fraction(event["package_id"], event["stage"]) * 100_000_000)
    return {
        "package_id": event["package_id"],
        "stage": event["stage"],
        "event_reference": f"TRK-{reference:08d}",
    }


def notify_customer_delivered(
    ctx: WorkflowActivityContext, request: dict[str, Any]
) -> dict[str, Any]:
    """Tell the customer the whole shipment arrived."""
    _simulate_latency(ctx.workflow_id, "notify-delivered")
    return {"shipment_id": request["shipment_id"], "sent_to": request["email"]}


# --------------------------------------------------------------------------------------------
# Payment gateway monitor: continue-as-new
# --------------------------------------------------------------------------------------------


def monitor_payment_gateway(ctx: DaprWorkflowContext, state: dict[str, Any]) -> WorkflowGen:
    """Check a gateway a few times per run, then continue as new so history stays short.

    ``state`` carries the running totals across runs; after ``max_runs`` runs the monitor
    completes with a summary (a real one would run forever; a bounded one keeps the demo's
    database small).
    """
    interval = timedelta(seconds=state["interval_seconds"])
    run = state["run"]
    checks = state["checks"]
    degraded = state["degraded"]
    for i in range(MONITOR_CHECKS_PER_RUN):
        if i:
            yield ctx.create_timer(interval)
        result = yield ctx.call_activity(
            check_gateway_health,
            input={"gateway": state["gateway"], "check": checks + 1},
        )
        checks += 1
        degraded += result["status"] != "healthy"
        ctx.set_custom_status(
            f"run {run} of {state['max_runs']}: {result['status']}, {result['latency_ms']} ms"
        )

    if run >= state["max_runs"]:
        return {
            "gateway": state["gateway"],
            "status": "monitoring window closed",
            "checks": checks,
            "degraded_checks": degraded,
        }
    yield ctx.create_timer(interval)
    ctx.continue_as_new({**state, "run": run + 1, "checks": checks, "degraded": degraded})
    return None


def check_gateway_health(ctx: WorkflowActivityContext, probe: dict[str, Any]) -> dict[str, Any]:
    """Probe the gateway's health endpoint (simulated: about one check in eight is slow)."""
    _simulate_latency(probe["gateway"], probe["check"])
    fraction = _stable_fraction(probe["gateway"], ctx.workflow_id, probe["check"])
    latency = int(40 + fraction * 160) if fraction < 0.875 else int(900 + fraction * 1200)
    return {
        "gateway": probe["gateway"],
        "latency_ms": latency,
        "status": "healthy" if latency < 500 else "degraded",
    }


# --------------------------------------------------------------------------------------------
# Subscriptions: waiting days for an event
# --------------------------------------------------------------------------------------------


def renew_subscription(ctx: DaprWorkflowContext, subscription: dict[str, Any]) -> WorkflowGen:
    """Remind the customer, then wait up to seven days for them to confirm the renewal."""
    subscription_id = subscription["subscription_id"]
    yield ctx.call_activity(send_renewal_reminder, input=subscription)
    try:
        answer = yield ctx.wait_for_external_event(RENEWAL_EVENT, timeout=RENEWAL_TIMEOUT)
    except TimeoutError:
        yield ctx.call_activity(
            lapse_subscription, input={"subscription_id": subscription_id, "reason": "no answer"}
        )
        return {"subscription_id": subscription_id, "status": "lapsed"}
    answer = answer or {}
    if not answer.get("renew"):
        yield ctx.call_activity(
            lapse_subscription,
            input={"subscription_id": subscription_id, "reason": "declined by customer"},
        )
        return {"subscription_id": subscription_id, "status": "cancelled by customer"}
    invoice = yield ctx.call_activity(extend_subscription, input=subscription)
    return {
        "subscription_id": subscription_id,
        "status": "renewed",
        "plan": subscription["plan"],
        "renewed_until": invoice["renewed_until"],
        "invoice_id": invoice["invoice_id"],
    }


def send_renewal_reminder(
    ctx: WorkflowActivityContext, subscription: dict[str, Any]
) -> dict[str, Any]:
    """Email the customer a link to confirm the renewal."""
    _simulate_latency(ctx.workflow_id, "reminder")
    return {"subscription_id": subscription["subscription_id"], "sent_to": subscription["email"]}


def extend_subscription(
    ctx: WorkflowActivityContext, subscription: dict[str, Any]
) -> dict[str, Any]:
    """Extend the plan by a year and raise the renewal invoice."""
    _simulate_latency(ctx.workflow_id, "extend")
    return {
        "subscription_id": subscription["subscription_id"],
        "renewed_until": subscription["renews_until"],
        "invoice_id": f"INV-R-{subscription['subscription_id'][-14:]}",
    }


def lapse_subscription(ctx: WorkflowActivityContext, request: dict[str, Any]) -> dict[str, Any]:
    """End the subscription at the close of the current term."""
    _simulate_latency(ctx.workflow_id, "lapse")
    return {
        "subscription_id": request["subscription_id"],
        "lapsed": True,
        "reason": request["reason"],
    }


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


class App(NamedTuple):
    """The workflows and activities one worker registers."""

    workflows: tuple[Callable[..., Any], ...]
    activities: tuple[Callable[..., Any], ...]


# The billing team's app, on an engine of its own when the shop runs as two apps.
BILLING_APP_ID = "billing"
BILLING = App(
    workflows=(settle_invoice, authorize_payment, monitor_payment_gateway),
    activities=(
        post_invoice_to_ledger,
        send_invoice_email,
        screen_for_fraud,
        charge_card,
        release_order_hold,
        check_gateway_health,
    ),
)
ORDERS = App(
    workflows=(
        process_order,
        fulfill_order,
        ship_order,
        track_package,
        renew_subscription,
    ),
    activities=(
        validate_order,
        request_manager_approval,
        confirm_order,
        cancel_order,
        reserve_inventory,
        create_pick_list,
        book_carrier_pickup,
        record_tracking_event,
        notify_customer_delivered,
        send_renewal_reminder,
        extend_subscription,
        lapse_subscription,
    ),
)
# The shop as one app.
SHOP = App(ORDERS.workflows + BILLING.workflows, ORDERS.activities + BILLING.activities)
WORKFLOWS = SHOP.workflows
ACTIVITIES = SHOP.activities


class ActivitiesInFlight:
    """Counts activities running in this process, so a shutdown can let them finish first.

    The SDK's worker drops results that are ready after it disconnected (the engine re-dispatches
    them, so nothing is lost, but each one logs a warning and runs twice).
    """

    def __init__(self) -> None:
        self._running = 0
        self._changed = threading.Condition()

    def track(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # keeps the signature the SDK inspects for the input parameter
        def tracked(ctx: WorkflowActivityContext, payload: Any) -> Any:
            with self._changed:
                self._running += 1
            try:
                return fn(ctx, payload)
            finally:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()

        return tracked

    def wait_idle(self, timeout: float) -> bool:
        """True once no activity runs; False if some still do after ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self._running == 0, timeout)


def register(
    runtime: WorkflowRuntime, in_flight: ActivitiesInFlight | None = None, app: App = SHOP
) -> None:
    """Register the app's workflows and activities (every sample's by default) under their
    function names.

    Registration marks the functions (an SDK detail), so each can be registered once per process:
    two runtimes in one process take apps that share none.
    """
    for workflow in app.workflows:
        runtime.register_workflow(workflow)
    for activity in app.activities:
        if in_flight is None:
            runtime.register_activity(activity)
        else:
            runtime.register_activity(in_flight.track(activity), name=activity.__name__)
