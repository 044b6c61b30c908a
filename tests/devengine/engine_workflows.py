"""Every workflow and activity the conformance suite runs, in one module.

All streams on one engine share one queue, so every worker connected to a shared engine must be
able to run every workflow any test starts: workers register all of them with `register_all`.

The first group reproduces the workflows recorded in the golden histories (same names, inputs,
outputs and actions in the same order); the rest exercise one engine feature each.
"""

from __future__ import annotations

import json
import os
import threading
import time
import types
from collections import Counter
from datetime import datetime, timedelta

from dapr.ext.workflow import (
    DaprWorkflowContext,
    RetryPolicy,
    TaskFailedError,
    WorkflowActivityContext,
    WorkflowRuntime,
    when_all,
    when_any,
)

# --- activities ------------------------------------------------------------------------------


def reserve_stock(ctx: WorkflowActivityContext, order: dict) -> dict:
    return {"reserved": order["qty"]}


def ship(ctx: WorkflowActivityContext, order: dict) -> dict:
    if order.get("address") == "nowhere":
        raise ValueError("no carrier serves this address")
    return {"tracking": f"trk-{order['id']}"}


_charge_attempts: Counter[str] = Counter()
_charge_lock = threading.Lock()


def charge_card(ctx: WorkflowActivityContext, order: dict) -> dict:
    # Counted per workflow instance (not per order id as in the recording) so that the same
    # order can be charged by many test runs against one worker.
    with _charge_lock:
        _charge_attempts[ctx.workflow_id] += 1
        attempt = _charge_attempts[ctx.workflow_id]
    if attempt < 3:
        raise ConnectionError(f"payment gateway timeout (attempt {attempt})")
    return {"charged": order["amount"]}


def echo(ctx: WorkflowActivityContext, value):
    return value


# What ran how often in this process, by workflow instance id: activity calls and workflow turns
# (the SDK calls a workflow's function anew at every turn it replays).
activity_calls: Counter[str] = Counter()
workflow_turns: Counter[str] = Counter()
_count_lock = threading.Lock()


def _count(counter: Counter[str], instance_id: str) -> None:
    with _count_lock:
        counter[instance_id] += 1


def counted_echo(ctx: WorkflowActivityContext, value):
    """echo, counting its calls in `activity_calls`."""
    _count(activity_calls, ctx.workflow_id)
    return value


def logged_echo(ctx: WorkflowActivityContext, args: dict):
    """echo of ``args["value"]``, adding a line to the file ``args["log"]`` at each call (a
    count of calls across worker processes)."""
    with open(args["log"], "a") as f:
        f.write(f"{ctx.workflow_id} {ctx.task_id}\n")
    return args["value"]


def blob(ctx: WorkflowActivityContext, size: int) -> str:
    """A result of `size` characters: what makes a history big."""
    return "x" * size


def slow_echo(ctx: WorkflowActivityContext, args: dict) -> dict:
    """Sleeps, then answers with the value and the pid of the worker process that ran it.

    With `marker_dir` set it first drops a file there, so a test can see the activity started.
    The environment variable SLOW_ECHO_SECONDS overrides the sleep (a worker started to take over
    from a killed one runs the same activity fast).
    """
    if args.get("marker_dir"):
        marker = os.path.join(args["marker_dir"], f"{ctx.workflow_id}-{ctx.task_id}-{os.getpid()}")
        with open(marker, "w") as f:
            f.write("started")
    seconds = float(os.environ.get("SLOW_ECHO_SECONDS", args.get("seconds", 0)))
    time.sleep(seconds)
    return {"value": args.get("value"), "pid": os.getpid()}


def cross_app_parent(ctx: DaprWorkflowContext, args: dict):
    """A child workflow, then an activity, both on the app ``args["app"]``."""
    child = yield ctx.call_child_workflow(
        cross_app_child, input=args.get("child", {}), app_id=args["app"]
    )
    echoed = yield ctx.call_activity(logged_echo, input=args["echo"], app_id=args["app"])
    return {"child": child, "echo": echoed}


def home_then_cross_app_child(ctx: DaprWorkflowContext, app: str):
    """A child workflow on its own app, then one on the app ``app``."""
    home = yield ctx.call_child_workflow(hello_world, input="home")
    away = yield ctx.call_child_workflow(cross_app_child, input={}, app_id=app)
    return {"home": home, "away": away}


def cross_app_big_activity(ctx: DaprWorkflowContext, args: dict):
    """`logged_echo` on the app ``args["app"]`` with an input of ``args["size"]`` characters
    built by the workflow itself (its own input stays small)."""
    padded = {"value": "ok", "log": args["log"], "pad": "x" * args["size"]}
    return (yield ctx.call_activity(logged_echo, input=padded, app_id=args["app"]))


def cross_app_slow_activity(ctx: DaprWorkflowContext, args: dict):
    """`slow_echo` on the app ``args["app"]``."""
    return (yield ctx.call_activity(slow_echo, input=args, app_id=args["app"]))


def cross_app_child(ctx: DaprWorkflowContext, args: dict):
    """Waits for the event "go" if asked to, then fails or answers as asked."""
    if args.get("wait"):
        yield ctx.wait_for_external_event("go")
    if args.get("fail"):
        raise ValueError("the child was asked to fail")
    return {"child": ctx.instance_id}


# --- workflows recorded in the golden histories ---------------------------------------------


def two_steps(ctx: DaprWorkflowContext, order: dict):
    stock = yield ctx.call_activity(reserve_stock, input=order)
    shipped = yield ctx.call_activity(ship, input=order)
    return {"stock": stock, "ship": shipped}


# 0.3 s between attempts, as recorded (fireAt = the failing turn's time + 0.3 s).
CHARGE_RETRY = RetryPolicy(first_retry_interval=timedelta(seconds=0.3), max_number_of_attempts=3)


def with_retry(ctx: DaprWorkflowContext, order: dict):
    return (yield ctx.call_activity(charge_card, input=order, retry_policy=CHARGE_RETRY))


def approval(ctx: DaprWorkflowContext, request: dict):
    approved = ctx.wait_for_external_event("approval")
    timeout = ctx.create_timer(timedelta(seconds=request["timeout"]))
    winner = yield when_any([approved, timeout])
    if winner == approved:
        return {"approved_by": approved.get_result()}
    return "timed out"


def line_item(ctx: DaprWorkflowContext, item: dict):
    reserved = yield ctx.call_activity(reserve_stock, input=item)
    return reserved["reserved"]


def fan_out(ctx: DaprWorkflowContext, order: dict):
    children = [
        ctx.call_child_workflow(line_item, input={"qty": qty, "id": order["id"]})
        for qty in order["qtys"]
    ]
    results = yield when_all(children)
    return sum(results)


def monitor(ctx: DaprWorkflowContext, checks: int):
    yield ctx.create_timer(timedelta(seconds=0.2))
    if checks < 2:
        ctx.continue_as_new(checks + 1)
        return
    return f"checked {checks + 1} times"


def fails(ctx: DaprWorkflowContext, order: dict):
    return (yield ctx.call_activity(ship, input=order))


def status_steps(ctx: DaprWorkflowContext, order: dict):
    ctx.set_custom_status(json.dumps({"step": "reserving"}))
    yield ctx.call_activity(reserve_stock, input=order)
    ctx.set_custom_status(json.dumps({"step": "done"}))
    return "ok"


def wait_forever(ctx: DaprWorkflowContext):
    return (yield ctx.wait_for_external_event("go"))


# --- workflows for single engine features ----------------------------------------------------


def hello_world(ctx: DaprWorkflowContext, name):
    greeting = yield ctx.call_activity(echo, input=f"hello {name}")
    return greeting


def sleep_then_return(ctx: DaprWorkflowContext, seconds: float):
    yield ctx.create_timer(timedelta(seconds=seconds))
    return "fired"


def sleep_until(ctx: DaprWorkflowContext, fire_at: str):
    """A timer at an ISO time: centuries ahead, or long past."""
    yield ctx.create_timer(datetime.fromisoformat(fire_at))
    return "fired"


def slow_steps(ctx: DaprWorkflowContext, args: dict):
    """`steps` slow activities in sequence, then a timer of `timer` seconds."""
    results = []
    for step in range(args["steps"]):
        results.append((yield ctx.call_activity(slow_echo, input={**args, "value": step})))
    if args.get("timer"):
        yield ctx.create_timer(timedelta(seconds=args["timer"]))
    return results


def parent_of_waiters(ctx: DaprWorkflowContext, count: int):
    """Children that wait forever: for recursive terminate and purge."""
    yield when_all([ctx.call_child_workflow(wait_forever) for _ in range(count)])
    return "children done"


def parent_of_sleeper(ctx: DaprWorkflowContext, seconds: float):
    """A child asleep on a timer: a recursive terminate must not fire it early."""
    return (yield ctx.call_child_workflow(sleep_then_return, input=seconds))


def nested_waiters(ctx: DaprWorkflowContext, depth: int):
    """A chain of `depth` children below this one; the deepest waits for "go"."""
    if depth == 0:
        return (yield ctx.wait_for_external_event("go"))
    return (yield ctx.call_child_workflow(nested_waiters, input=depth - 1))


def parent_of_monitor(ctx: DaprWorkflowContext):
    """The child continues as new twice: only its last generation reports back."""
    return (yield ctx.call_child_workflow(monitor, input=0))


def collect_events(ctx: DaprWorkflowContext, count: int):
    values = []
    for _ in range(count):
        values.append((yield ctx.wait_for_external_event("item")))
    return values


def charge_once(ctx: DaprWorkflowContext, order: dict):
    """Fails unless charge_card's attempt count for this instance id has reached 3."""
    return (yield ctx.call_activity(charge_card, input=order))


def parent_retrying_child(ctx: DaprWorkflowContext, order: dict):
    # A retried child keeps its instance id: the engine restarts the failed child as a new run.
    return (yield ctx.call_child_workflow(charge_once, input=order, retry_policy=CHARGE_RETRY))


def parent_of_failing_child(ctx: DaprWorkflowContext, order: dict):
    try:
        yield ctx.call_child_workflow(fails, input=order)
    except TaskFailedError as error:
        return f"child failed: {error}"
    return "child succeeded"


def rerun_source(ctx: DaprWorkflowContext, value: str):
    """An activity (event 1), a timer (event 2), an activity (event 3): one of each to rerun."""
    first = yield ctx.call_activity(echo, input=value)
    yield ctx.create_timer(timedelta(seconds=0.1))
    second = yield ctx.call_activity(echo, input=f"{first}!")
    return second


def carry_over(ctx: DaprWorkflowContext, generation: int):
    """Generation 0 waits for "first" and continues as new keeping the events it did not use."""
    if generation == 0:
        yield ctx.wait_for_external_event("first")
        ctx.continue_as_new(1, save_events=True)
        return
    second = yield ctx.wait_for_external_event("second")
    return {"generation": generation, "second": second}


def echo_generations(ctx: DaprWorkflowContext, generation: int):
    """Echoes its generation through `counted_echo` and continues as new from generation 0 to 1;
    counts its turns in `workflow_turns`."""
    _count(workflow_turns, ctx.instance_id)
    value = yield ctx.call_activity(counted_echo, input=generation)
    if value == 0:
        ctx.continue_as_new(1)
        return
    return value


def parent_of_echo(ctx: DaprWorkflowContext):
    """A child `echo_generations` of generation 1; counts its turns in `workflow_turns`."""
    _count(workflow_turns, ctx.instance_id)
    return (yield ctx.call_child_workflow(echo_generations, input=1))


def patched(ctx: DaprWorkflowContext):
    if ctx.is_patched("fix-1"):
        value = yield ctx.call_activity(echo, input="patched")
    else:
        value = yield ctx.call_activity(echo, input="unpatched")
    return value


def versioned_v1(ctx: DaprWorkflowContext):
    return "v1"


def versioned_v2(ctx: DaprWorkflowContext):
    value = yield ctx.wait_for_external_event("go")
    return f"v2 {value}"


def race_then_continue(ctx: DaprWorkflowContext, generation: int):
    """Generation 0 races an event against a 1 s timer and continues as new when the event
    wins, leaving the timer behind; generation 1 waits for "done"."""
    if generation == 0:
        go = ctx.wait_for_external_event("go")
        yield when_any([go, ctx.create_timer(timedelta(seconds=1))])
        ctx.continue_as_new(1)
        return
    return (yield ctx.wait_for_external_event("done"))


def patch_order_new(ctx: DaprWorkflowContext):
    ctx.is_patched("patch2")
    ctx.is_patched("patch1")
    return (yield ctx.wait_for_external_event("go"))


def patch_order_old(ctx: DaprWorkflowContext):
    # The same patches checked in the other order: the history's patches are no longer a prefix
    # of the ones this code reports, which daprd treats as a patch mismatch.
    ctx.is_patched("patch1")
    ctx.is_patched("patch2")
    return (yield ctx.wait_for_external_event("go"))


def custom_status_then_wait(ctx: DaprWorkflowContext):
    ctx.set_custom_status("waiting")
    value = yield ctx.wait_for_external_event("go")
    return value


def two_events(ctx: DaprWorkflowContext):
    """Waits for "first" then "second": events raised in any order are buffered by name."""
    first = yield ctx.wait_for_external_event("first")
    second = yield ctx.wait_for_external_event("second")
    return [first, second]


def grow(ctx: DaprWorkflowContext, args: dict):
    """Calls `blob` `steps` times: every result of `size` characters stays in the history."""
    total = 0
    for _ in range(args["steps"]):
        total += len((yield ctx.call_activity(blob, input=args["size"])))
    return total


def big_activity_input(ctx: DaprWorkflowContext, size: int):
    """Hands `echo` an input of `size` characters built by the workflow itself."""
    return len((yield ctx.call_activity(echo, input="x" * size)))


WORKFLOWS = [
    two_steps,
    with_retry,
    approval,
    line_item,
    fan_out,
    monitor,
    fails,
    status_steps,
    wait_forever,
    hello_world,
    sleep_then_return,
    sleep_until,
    slow_steps,
    parent_of_waiters,
    parent_of_sleeper,
    parent_of_failing_child,
    charge_once,
    parent_retrying_child,
    nested_waiters,
    parent_of_monitor,
    collect_events,
    race_then_continue,
    rerun_source,
    carry_over,
    patched,
    custom_status_then_wait,
    two_events,
    grow,
    big_activity_input,
    echo_generations,
    parent_of_echo,
    cross_app_parent,
    cross_app_child,
    home_then_cross_app_child,
    cross_app_big_activity,
    cross_app_slow_activity,
]
ACTIVITIES = [reserve_stock, ship, charge_card, echo, slow_echo, blob, counted_echo, logged_echo]

# The name the versioned workflow is registered under; v2 is the latest.
VERSIONED = "versioned"
PATCH_ORDER = "patch_order"


def _fresh(fn):
    """A copy of `fn` without the attributes registration leaves on a function, so the same
    workflows can be registered with several runtimes in one process."""
    copy = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    copy.__annotations__ = dict(fn.__annotations__)
    return copy


def register_all(
    runtime: WorkflowRuntime,
    *,
    versions: tuple[str, ...] = ("v1", "v2"),
    old_patch_order: bool = False,
) -> None:
    """Registers everything; `versions` and `old_patch_order` let a test start a worker that
    runs older code than the one that wrote a history."""
    for workflow in WORKFLOWS:
        runtime.register_workflow(_fresh(workflow), name=workflow.__name__)
    for activity in ACTIVITIES:
        runtime.register_activity(_fresh(activity), name=activity.__name__)
    patch_body = patch_order_old if old_patch_order else patch_order_new
    runtime.register_workflow(_fresh(patch_body), name=PATCH_ORDER)
    bodies = {"v1": versioned_v1, "v2": versioned_v2}
    latest = versions[-1] if versions else None
    for version in versions:
        runtime.register_versioned_workflow(
            _fresh(bodies[version]),
            name=VERSIONED,
            version_name=version,
            is_latest=version == latest,
        )
