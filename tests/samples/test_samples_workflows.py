"""The sample workflows, run to their end by the SDK's own executor (see samples_replay)."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime

import pytest
from samples_replay import Replayer

from devengine.samples import generator, workflows


@pytest.fixture
def replayer(sample_runtime) -> Replayer:
    return Replayer(sample_runtime)


@pytest.fixture
def shop() -> generator.LoadGenerator:
    """Only for its business-data builders; never runs."""
    return generator.LoadGenerator(
        client=None,  # type: ignore[arg-type]
        rate=0,
        stop=threading.Event(),
        rng=random.Random(7),
        now=lambda: datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
    )


def test_an_approved_order_is_confirmed(replayer, shop):
    order = shop.make_order("order-20261123-00042", large=True)
    decision = {"approved": True, "approver": "m.keller", "comment": "approved"}
    outcome = replayer.run(
        "process_order", order, order["order_id"], events=[(workflows.APPROVAL_EVENT, decision)]
    )
    assert outcome.status == "COMPLETED"
    assert outcome.output["status"] == "confirmed"
    assert outcome.output["approver"] == "m.keller"
    assert outcome.activities == ["validate_order", "request_manager_approval", "confirm_order"]
    # Billing invoices the confirmed order in a child workflow.
    [invoice] = outcome.children
    assert invoice.status == "COMPLETED"
    assert invoice.activities == ["post_invoice_to_ledger", "send_invoice_email"]
    assert invoice.output["amount"] == order["total"]
    assert invoice.output["invoice_id"] == outcome.output["invoice_id"]


def test_a_rejected_order_is_cancelled_with_the_managers_reason(replayer, shop):
    order = shop.make_order("order-20261123-00043", large=True)
    decision = {"approved": False, "approver": "s.okafor", "comment": "over credit limit"}
    outcome = replayer.run(
        "process_order", order, order["order_id"], events=[(workflows.APPROVAL_EVENT, decision)]
    )
    assert outcome.output == {
        "order_id": order["order_id"],
        "status": "rejected",
        "approver": "s.okafor",
        "reason": "over credit limit",
    }
    assert outcome.activities[-1] == "cancel_order"


def test_an_order_nobody_answers_expires_after_the_approval_timeout(replayer, shop):
    order = shop.make_order("order-20261123-00044", large=True)
    outcome = replayer.run("process_order", order, order["order_id"])
    assert outcome.output["status"] == "expired"
    assert outcome.elapsed == workflows.APPROVAL_TIMEOUT


def test_a_small_order_needs_no_approval(replayer, shop):
    order = shop.make_order("order-20261123-00045", large=False)
    assert not workflows.needs_approval(order)
    outcome = replayer.run("process_order", order, order["order_id"])
    assert outcome.output["approver"] == "auto-approval"
    assert "request_manager_approval" not in outcome.activities


def test_fulfilment_reserves_every_line_then_builds_one_pick_list(replayer, shop):
    order = shop.make_order("order-20261123-00046", large=True)
    outcome = replayer.run("fulfill_order", order, "fulfillment-20261123-00001")
    assert outcome.status == "COMPLETED"
    assert outcome.activities == ["reserve_inventory"] * len(order["items"]) + ["create_pick_list"]
    assert outcome.output["units"] == sum(line["quantity"] for line in order["items"])


def test_the_legacy_ledger_fails_twice_and_the_retry_policy_gets_the_invoice_through(
    replayer, shop
):
    invoice = shop.make_invoice("invoice-20261123-00007", flaky=True)
    outcome = replayer.run("settle_invoice", invoice, invoice["invoice_id"])
    assert outcome.status == "COMPLETED"
    assert outcome.activities == ["post_invoice_to_ledger"] * 3 + ["send_invoice_email"]
    assert outcome.output["journal_entry"].startswith("JE-")


def test_other_ledgers_book_an_invoice_first_time(replayer, shop):
    invoice = shop.make_invoice("invoice-20261123-00008", flaky=False)
    outcome = replayer.run("settle_invoice", invoice, invoice["invoice_id"])
    assert outcome.activities == ["post_invoice_to_ledger", "send_invoice_email"]


def test_a_declined_card_releases_the_hold_and_fails_the_workflow_with_a_stack_trace(
    replayer, shop
):
    payment = shop.make_payment("payment-20261123-00003", declined=True)
    outcome = replayer.run("authorize_payment", payment, payment["payment_id"])
    assert outcome.status == "FAILED"
    assert outcome.activities == ["screen_for_fraud", "charge_card", "release_order_hold"]
    assert outcome.failure.errorType == "PaymentDeclinedError"
    assert "insufficient funds" in outcome.failure.errorMessage
    assert "authorize_payment" in outcome.failure.stackTrace.value


def test_a_good_card_is_captured(replayer, shop):
    payment = shop.make_payment("payment-20261123-00004", declined=False)
    outcome = replayer.run("authorize_payment", payment, payment["payment_id"])
    assert outcome.output["status"] == "captured"


def test_a_shipment_follows_each_package_in_a_child_workflow_with_tracking_statuses(replayer, shop):
    shipment = shop.make_shipment("shipment-20261123-00009")
    outcome = replayer.run("ship_order", shipment, shipment["shipment_id"])
    assert outcome.status == "COMPLETED"
    assert len(outcome.children) == len(shipment["packages"])
    for child in outcome.children:
        assert child.custom_statuses == [*workflows.TRACKING_STAGES, "delivered"]
    assert outcome.custom_statuses[-1] == "all packages delivered"
    assert outcome.output["packages"] == [p["package_id"] for p in shipment["packages"]]


def test_the_gateway_monitor_continues_as_new_and_stops_after_its_last_run(replayer):
    state = {
        "gateway": "adyen-eu",
        "run": 1,
        "max_runs": 3,
        "checks": 0,
        "degraded": 0,
        "interval_seconds": 10,
    }
    outcome = replayer.run("monitor_payment_gateway", state, "monitor-adyen-eu-20261123-00001")
    assert outcome.status == "COMPLETED"
    assert outcome.runs == 3
    assert outcome.output["checks"] == 3 * workflows.MONITOR_CHECKS_PER_RUN
    assert outcome.custom_statuses[-1].startswith("run 3 of 3")


@pytest.mark.parametrize(
    ("answer", "status"),
    [({"renew": True}, "renewed"), ({"renew": False}, "cancelled by customer")],
)
def test_a_renewal_follows_the_customers_answer(replayer, shop, answer, status):
    subscription = shop.make_subscription("renewal-20261123-00010")
    outcome = replayer.run(
        "renew_subscription",
        subscription,
        "renewal-20261123-00010",
        events=[(workflows.RENEWAL_EVENT, answer)],
    )
    assert outcome.output["status"] == status


def test_a_renewal_nobody_confirms_lapses_after_seven_days(replayer, shop):
    subscription = shop.make_subscription("renewal-20261123-00011")
    outcome = replayer.run("renew_subscription", subscription, "renewal-20261123-00011")
    assert outcome.output["status"] == "lapsed"
    assert outcome.elapsed == workflows.RENEWAL_TIMEOUT
