"""Throughput of devengine with one Dapr SDK worker process.

    python bench/engine_throughput.py [--n 500] [--clients 4] [--record]

Starts a devengine on a fresh SQLite file and one worker process (a Dapr SDK WorkflowRuntime),
then runs N workflows of two activities each, started by a few concurrent client threads. Reports
completed workflows per second, start-to-completion latency (p50/p99: from just before the
client's StartInstance call to the engine's last-updated time of the completed instance), and
the CPU seconds per workflow spent by the engine process and by the worker process in the same
run (utime + stime from /proc). By default nothing but the starts talks to the engine while the
workflows run (the run ends when both processes go quiet; states are read afterwards); with
--wait-each every start is followed by a WaitForInstanceCompletion, as an application would do,
and the engine's CPU includes serving those. With --record it appends the figures to
bench/RESULTS.md.

The target of the engine issue: engine CPU per workflow at most 0.7 x the worker's, and at least
40 completed workflows per second.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

from benchlib import REPO_ROOT, RESULTS, append_result, cpu_seconds, free_port, machine, percentile

WORKFLOW = "bench_two_steps"
IDLE_SAMPLE_S = 2.0


# --- the worker process --------------------------------------------------------------------------


def run_worker(address: str, ready_file: str) -> None:
    """Body of the worker process: a plain SDK worker running the benchmark workflow."""
    from dapr.ext.workflow import WorkflowRuntime

    def step_one(ctx, n):
        return n + 1

    def step_two(ctx, n):
        return n * 2

    def bench_two_steps(ctx, n):
        first = yield ctx.call_activity(step_one, input=n)
        second = yield ctx.call_activity(step_two, input=first)
        return second

    host, _, port = address.rpartition(":")
    runtime = WorkflowRuntime(host=host, port=port)
    runtime.register_workflow(bench_two_steps, name=WORKFLOW)
    runtime.register_activity(step_one)
    runtime.register_activity(step_two)
    runtime.start()
    Path(ready_file).write_text("ready")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    runtime.shutdown()


# --- helpers -------------------------------------------------------------------------------------


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


class Processes:
    """The engine and worker processes of one run; both are stopped however the run ends."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.engine: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with open(self.workdir / "engine.log", "wb") as log:
            self.engine = subprocess.Popen(
                [
                    sys.executable, "-m", "devengine",
                    "--port", str(self.port), "--db", str(self.workdir / "engine.sqlite3"),
                ],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self.engine_answers, 30, "the engine to answer Hello")

        ready = self.workdir / "worker.ready"
        with open(self.workdir / "worker.log", "wb") as log:
            self.worker = subprocess.Popen(
                [sys.executable, __file__, "--worker", self.address, str(ready)],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(ready.exists, 60, "the worker to connect")

    def engine_answers(self) -> bool:
        import grpc
        from google.protobuf import empty_pb2

        if self.engine and self.engine.poll() is not None:
            raise SystemExit(f"devengine exited; see {self.workdir / 'engine.log'}")
        with grpc.insecure_channel(self.address) as channel:
            stub = stubs_module().TaskHubSidecarServiceStub(channel)
            try:
                stub.Hello(empty_pb2.Empty(), timeout=1)
                return True
            except grpc.RpcError:
                return False

    def stop(self) -> None:
        for process in (self.worker, self.engine):
            if process and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


def stubs_module():
    from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc

    return orchestrator_service_pb2_grpc


# --- the run -------------------------------------------------------------------------------------


class Client:
    """Stubs per thread (a channel each, as separate clients would have)."""

    def __init__(self, address: str):
        self.address = address
        self.local = threading.local()

    def stub(self):
        import grpc

        if not hasattr(self.local, "stub"):
            channel = grpc.insecure_channel(self.address)
            self.local.stub = stubs_module().TaskHubSidecarServiceStub(channel)
        return self.local.stub

    def start_all(self, ids: list[str], clients: int, then=None) -> dict[str, float]:
        """Starts every id from `clients` threads; returns the wall time just before each start
        call. `then(id)` runs after each start (to hand the id to a waiter)."""
        from dapr.ext.workflow._durabletask.internal import protos as pb
        from google.protobuf import wrappers_pb2

        started: dict[str, float] = {}

        def start(instance_id: str) -> None:
            request = pb.CreateInstanceRequest(
                instanceId=instance_id, name=WORKFLOW, input=wrappers_pb2.StringValue(value="1")
            )
            started[instance_id] = time.time()
            self.stub().StartInstance(request, timeout=60)
            if then:
                then(instance_id)

        with ThreadPoolExecutor(max_workers=clients) as starters:
            list(starters.map(start, ids))
        return started

    def completion_time(self, instance_id: str, wait: bool) -> float:
        """The engine's last-updated time of a completed instance (epoch seconds)."""
        from dapr.ext.workflow._durabletask.internal import protos as pb

        request = pb.GetInstanceRequest(instanceId=instance_id)
        if wait:
            response = self.stub().WaitForInstanceCompletion(request, timeout=300)
        else:
            response = self.stub().GetInstance(request, timeout=30)
        state = response.workflowState
        if state.workflowStatus != pb.ORCHESTRATION_STATUS_COMPLETED:
            raise SystemExit(f"{instance_id} did not complete: status {state.workflowStatus}")
        return state.lastUpdatedTimestamp.ToDatetime(tzinfo=UTC).timestamp()

    def run_waiting(self, ids: list[str], clients: int) -> dict[str, tuple[float, float]]:
        """Each workflow is followed by a WaitForInstanceCompletion, as an application would."""
        finished: dict[str, float] = {}
        # A long poll per instance: enough waiter threads that none queues for long.
        with ThreadPoolExecutor(max_workers=64) as waiters:

            def wait_for(instance_id: str) -> None:
                finished[instance_id] = self.completion_time(instance_id, wait=True)

            started = self.start_all(
                ids, clients, then=lambda instance_id: waiters.submit(wait_for, instance_id)
            )
        missing = set(ids) - set(finished)
        if missing:
            raise SystemExit(f"{len(missing)} workflows were not seen completing")
        return {i: (started[i], finished[i]) for i in ids}


def wait_until_quiet(pids: list[int], interval: float = 0.3) -> None:
    """Returns once none of the processes used more than 1% of a CPU over `interval`."""
    last = [cpu_seconds(pid) for pid in pids]
    while True:
        time.sleep(interval)
        now = [cpu_seconds(pid) for pid in pids]
        if all(b - a <= interval / 100 for a, b in zip(last, now, strict=True)):
            return
        last = now


def measure(n: int, clients: int, warmup: int, wait_each: bool) -> dict:
    # Other processes on the machine skew wall time more than CPU time: say how busy it was.
    load_before = os.getloadavg()[0]
    ids = [f"bench-{i}" for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        processes = Processes(Path(tmp))
        try:
            processes.start()
            assert processes.engine and processes.worker
            pids = [processes.engine.pid, processes.worker.pid]
            client = Client(processes.address)
            client.run_waiting([f"warmup-{i}" for i in range(warmup)], clients)

            # What the engine burns doing nothing (worker connected, no work): part of every run.
            idle = cpu_seconds(processes.engine.pid)
            time.sleep(IDLE_SAMPLE_S)
            idle = (cpu_seconds(processes.engine.pid) - idle) / IDLE_SAMPLE_S

            engine_cpu, worker_cpu = (cpu_seconds(pid) for pid in pids)
            began = time.time()
            if wait_each:
                times = client.run_waiting(ids, clients)
            else:
                # No client calls while the workflows run: the CPU is the workflows' alone.
                started = client.start_all(ids, clients)
                wait_until_quiet(pids)
            engine_cpu, worker_cpu = (cpu_seconds(pid) - cpu for pid, cpu in zip(
                pids, (engine_cpu, worker_cpu), strict=True
            ))  # fmt: skip
            if not wait_each:
                times = {i: (started[i], client.completion_time(i, wait=False)) for i in ids}
        finally:
            processes.stop()

    last_completion = max(done for _, done in times.values())
    latencies = sorted(done - start for start, done in times.values())
    elapsed = last_completion - began
    return {
        "n": n,
        "clients": clients,
        "completion": "a WaitForInstanceCompletion per workflow" if wait_each else "no waits",
        "elapsed_s": elapsed,
        "per_second": n / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "engine_cpu_ms": engine_cpu / n * 1000,
        "worker_cpu_ms": worker_cpu / n * 1000,
        "ratio": engine_cpu / worker_cpu if worker_cpu else float("inf"),
        "load_before": load_before,
        "engine_idle_ms_per_s": idle * 1000,
    }


def table(result: dict) -> str:
    ratio_ok = "yes" if result["ratio"] <= 0.7 else "no"
    rate_ok = "yes" if result["per_second"] >= 40 else "no"
    rows = [
        ("workflows (2 activities each)", f"{result['n']}", ""),
        ("client threads", f"{result['clients']}", ""),
        ("completion seen by", result["completion"], ""),
        ("wall time", f"{result['elapsed_s']:.2f} s", ""),
        ("completed workflows / s", f"{result['per_second']:.1f}", f">= 40: {rate_ok}"),
        ("latency p50", f"{result['p50_ms']:.0f} ms", ""),
        ("latency p99", f"{result['p99_ms']:.0f} ms", ""),
        ("engine CPU / workflow", f"{result['engine_cpu_ms']:.2f} ms", ""),
        ("worker CPU / workflow", f"{result['worker_cpu_ms']:.2f} ms", ""),
        ("engine / worker CPU", f"{result['ratio']:.2f}", f"<= 0.7: {ratio_ok}"),
        ("engine CPU when idle", f"{result['engine_idle_ms_per_s']:.1f} ms/s", ""),
    ]
    lines = ["| measure | value | target |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    return "\n".join(lines)


def record(result: dict, command: str) -> None:
    load = f"{machine()}, load average before the run {result['load_before']:.2f}"
    append_result("engine_throughput", command, load, table(result))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        run_worker(sys.argv[2], sys.argv[3])
        return

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="workflows to run (default 500)")
    parser.add_argument("--clients", type=int, default=4, help="starting threads (default 4)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured workflows first")
    parser.add_argument(
        "--wait-each",
        action="store_true",
        help="follow every start with a WaitForInstanceCompletion (its cost lands on the engine); "
        "by default the run ends when engine and worker go quiet and states are read afterwards",
    )
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()

    result = measure(args.n, args.clients, args.warmup, args.wait_each)
    print(table(result))
    print(f"\nload average before the run: {result['load_before']:.2f} on {os.cpu_count()} CPUs")
    if args.record:
        command = "python bench/engine_throughput.py " + " ".join(
            a for a in sys.argv[1:] if a != "--record"
        )
        record(result, command.strip())
        print(f"\nappended to {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
