"""The workflows the integration tests run on a real devengine with a real SDK worker: one of
each kind the console must index (activities, failure, retry, timers and events, children,
continue-as-new, custom status, suspend/resume, terminate)."""

from __future__ import annotations

import json
import threading
import types
from collections import Counter
from datetime import timedelta

from dapr.ext.workflow import (
    DaprWorkflowContext,
    RetryPolicy,
    WorkflowActivityContext,
    WorkflowRuntime,
    when_all,
    when_any,
)

_attempts: Counter[str] = Counter()
_lock = threading.Lock()


def reserve_stock(ctx: WorkflowActivityContext, order: dict) -> dict:
    return {"reserved": order["qty"]}


def ship(ctx: WorkflowActivityContext, order: dict) -> dict:
    if order.get("address") == "nowhere":
        raise ValueError("no carrier serves this address")
    return {"tracking": f"trk-{order['id']}"}


def charge_card(ctx: WorkflowActivityContext, order: dict) -> dict:
    with _lock:
        _attempts[ctx.workflow_id] += 1
        attempt = _attempts[ctx.workflow_id]
    if attempt < 3:
        raise ConnectionError(f"payment gateway timeout (attempt {attempt})")
    return {"charged": order["amount"]}


def two_steps(ctx: DaprWorkflowContext, order: dict):
    stock = yield ctx.call_activity(reserve_stock, input=order)
    shipped = yield ctx.call_activity(ship, input=order)
    return {"stock": stock, "ship": shipped}


def fails(ctx: DaprWorkflowContext, order: dict):
    result = yield ctx.call_activity(ship, input=order)
    return result


def with_retry(ctx: DaprWorkflowContext, order: dict):
    policy = RetryPolicy(first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=3)
    result = yield ctx.call_activity(charge_card, input=order, retry_policy=policy)
    return result


def approval(ctx: DaprWorkflowContext, args: dict):
    event = ctx.wait_for_external_event("approval")
    timer = ctx.create_timer(timedelta(seconds=args["timeout"]))
    winner = yield when_any([event, timer])
    if winner == timer:
        return "timed out"
    return {"approved_by": event.get_result()}


def line_item(ctx: DaprWorkflowContext, item: dict):
    yield ctx.call_activity(reserve_stock, input=item)
    return item["qty"]


def fan_out(ctx: DaprWorkflowContext, order: dict):
    tasks = [
        ctx.call_child_workflow(line_item, input={"qty": q, "id": order["id"]})
        for q in order["qtys"]
    ]
    results = yield when_all(tasks)
    return sum(results)


def monitor(ctx: DaprWorkflowContext, remaining: int):
    yield ctx.create_timer(timedelta(milliseconds=300))
    if remaining > 0:
        ctx.continue_as_new(remaining - 1)
        return None
    return "checked"


def two_timers(ctx: DaprWorkflowContext, _: object = None):
    """A timer, then another: two timer bars, the second starting where the first ends."""
    yield ctx.create_timer(timedelta(milliseconds=100))
    yield ctx.create_timer(timedelta(milliseconds=100))
    return "done"


def status_steps(ctx: DaprWorkflowContext, order: dict):
    ctx.set_custom_status(json.dumps({"step": "reserving"}))
    yield ctx.call_activity(reserve_stock, input=order)
    ctx.set_custom_status(json.dumps({"step": "done"}))
    return "ok"


def wait_forever(ctx: DaprWorkflowContext, _: object = None):
    value = yield ctx.wait_for_external_event("go")
    return value


def cross_app_order(ctx: DaprWorkflowContext, args: dict):
    """two_steps as a child workflow on the app ``args["app"]`` (another engine)."""
    return (yield ctx.call_child_workflow(two_steps, input=args["order"], app_id=args["app"]))


WORKFLOWS = [
    two_steps,
    cross_app_order,
    fails,
    with_retry,
    approval,
    line_item,
    fan_out,
    monitor,
    two_timers,
    status_steps,
    wait_forever,
]
ACTIVITIES = [reserve_stock, ship, charge_card]


def _fresh(fn):
    # The SDK marks a function as registered: each runtime (one per test) gets its own copy.
    return types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )


def register_all(runtime: WorkflowRuntime) -> None:
    for wf in WORKFLOWS:
        runtime.register_workflow(_fresh(wf), name=wf.__name__)
    for act in ACTIVITIES:
        runtime.register_activity(_fresh(act), name=act.__name__)


# A workflow deployed in two versions (v2 the latest): a worker that has only v1 when an instance
# written by v2 needs a turn stalls it, until a worker with v2 connects.
VERSIONED = "renew_plan"


def renew_plan_v1(ctx: DaprWorkflowContext, _: object = None):
    return "v1"


def renew_plan_v2(ctx: DaprWorkflowContext, _: object = None):
    value = yield ctx.wait_for_external_event("go")
    return f"v2 {value}"


def register_versions(runtime: WorkflowRuntime, versions: tuple[str, ...]) -> None:
    """Registers these versions of VERSIONED, the last one as the latest."""
    bodies = {"v1": renew_plan_v1, "v2": renew_plan_v2}
    for version in versions:
        runtime.register_versioned_workflow(
            _fresh(bodies[version]),
            name=VERSIONED,
            version_name=version,
            is_latest=version == versions[-1],
        )
