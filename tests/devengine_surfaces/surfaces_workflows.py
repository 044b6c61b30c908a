"""The workflows and activities the surfaces suite starts; register_all registers every one."""

from __future__ import annotations

from dapr.ext.workflow import (
    DaprWorkflowContext,
    WorkflowActivityContext,
    WorkflowRuntime,
    when_all,
)


def process_payment(ctx: WorkflowActivityContext, order: dict) -> dict:
    return {"paymentId": f"pay-{order['orderId']}", "charged": order["amount"]}


def reserve_carrier(ctx: WorkflowActivityContext, shipment: dict) -> dict:
    raise RuntimeError(f"no carrier serves postcode {shipment['postcode']}")


def order_processing(ctx: DaprWorkflowContext, order: dict):
    """The docs' OrderProcessingWorkflow: waits for an approval, then charges the order."""
    ctx.set_custom_status("awaiting approval")
    approval = yield ctx.wait_for_external_event("approval")
    ctx.set_custom_status("charging")
    payment = yield ctx.call_activity(process_payment, input=order)
    return {"orderId": order["orderId"], "approvedBy": approval["by"], "payment": payment}


def confirm_order(ctx: DaprWorkflowContext, order: dict):
    """Finishes in its first turn (an empty input confirms an order without an id)."""
    return {"orderId": (order or {}).get("orderId"), "status": "confirmed"}


def ship_order(ctx: DaprWorkflowContext, shipment: dict):
    """Fails: its activity always raises."""
    yield ctx.call_activity(reserve_carrier, input=shipment)
    return "shipped"


def order_batch(ctx: DaprWorkflowContext, batch: dict):
    """A parent whose child orders wait for approvals (for recursive terminate and purge)."""
    children = [ctx.call_child_workflow(order_processing, input=order) for order in batch["orders"]]
    results = yield when_all(children)
    return results


def register_all(runtime: WorkflowRuntime) -> None:
    runtime.register_activity(process_payment, name="ProcessPayment")
    runtime.register_activity(reserve_carrier, name="ReserveCarrier")
    runtime.register_workflow(order_processing, name="OrderProcessingWorkflow")
    runtime.register_workflow(confirm_order, name="ConfirmOrderWorkflow")
    runtime.register_workflow(ship_order, name="ShipOrderWorkflow")
    runtime.register_workflow(order_batch, name="OrderBatchWorkflow")
