"""The heartbeat of runindexer: a real process over a real devengine, killed or held in a pass."""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack
from datetime import timedelta

import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from tests.console import wf_kinds
from tests.console.support import DevEngine, start_runindexer, wait_for
from tests.console.test_integration import subprocess_env
from workflows_ui import models
from workflows_ui.models import Engine, Instance

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Seconds without a heartbeat before an engine is stale, for the tests and their runindexer
# alike (a beat every half-second): a minute by default.
STALE_AFTER = 3.0


@pytest.fixture
def short_limit(settings):
    settings.CONSOLE_INDEXER_STALE_AFTER = STALE_AFTER


def _runindexer(stack: ExitStack, engine: DevEngine, tmp_path, **env: str):
    env = {
        **subprocess_env(engine.config()),
        "CONSOLE_INDEXER_STALE_AFTER": str(STALE_AFTER),
        **env,
    }
    return start_runindexer(stack, tmp_path / "indexer.log", env)


def _engine_health() -> dict:
    api = APIClient()
    api.force_authenticate(User.objects.get_or_create(username="reader")[0])
    (row,) = api.get("/api/engines/").json()
    return row


def _beating() -> bool:
    engine = Engine.objects.filter(name="local").first()
    return engine is not None and engine.indexer_seen_at is not None and engine.health() == "ok"


def test_an_engine_whose_runindexer_was_killed_is_stale_within_the_limit(tmp_path, short_limit):
    with ExitStack() as stack:
        engine = DevEngine(tmp_path / "engine.sqlite3").start()
        stack.callback(engine.stop)
        proc = _runindexer(stack, engine, tmp_path)
        wait_for(_beating, timeout=30)
        assert _engine_health()["health"] == "ok"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = timezone.now()
        # Its last pass said ok, and the engine still answers: only the heartbeat says.
        row = wait_for(lambda: (r := _engine_health())["health"] == "stale" and r, timeout=10)
        assert isinstance(row, dict)
        assert timezone.now() - killed_at < timedelta(seconds=STALE_AFTER + 2)
    seen = Engine.objects.get(name="local").indexer_last_seen()
    assert row["failing_since"] == seen.isoformat().replace("+00:00", "Z")
    assert killed_at - timedelta(seconds=STALE_AFTER) < seen <= killed_at


def test_a_pass_held_longer_than_the_limits_is_not_stale_while_its_runindexer_lives(
    tmp_path, short_limit, monkeypatch
):
    # A pass of an engine slow to answer each read may take longer than the limit on passes
    # that engines with no heartbeat are held to (5 minutes): shortened alike here.
    monkeypatch.setattr(models, "INDEXER_SILENT", timedelta(seconds=STALE_AFTER))
    with ExitStack() as stack:
        engine = DevEngine(tmp_path / "engine.sqlite3", "--app-id", "shop").start()
        stack.callback(engine.stop)
        runtime = WorkflowRuntime(host="127.0.0.1", port=str(engine.port))
        wf_kinds.register_all(runtime)
        runtime.start()
        stack.callback(runtime.shutdown)
        client = DaprWorkflowClient(host="127.0.0.1", port=str(engine.port))
        stack.callback(client.close)
        client.schedule_new_workflow(wf_kinds.wait_forever, instance_id="waits")
        # Each read of the engine held below waits this long: the pass holds all that time.
        proc = _runindexer(stack, engine, tmp_path, CONSOLE_ENGINE_TIMEOUT="60")
        wait_for(lambda: Instance.objects.filter(instance_id="waits").exists() and _beating())
        assert engine.process is not None
        pid = engine.process.pid
        os.kill(pid, signal.SIGSTOP)  # answers nothing, refuses nothing: reads wait
        stack.callback(os.kill, pid, signal.SIGCONT)

        def held() -> object:
            """The last pass's time once no pass has ended for longer than a pass takes
            without a call (the sweep's pause, the idle sleep): the pass now waits on a read
            or a listing of the stopped engine. A second after the stop was not always it."""
            before = Engine.objects.get(name="local").last_pass_at
            time.sleep(2.5)
            return Engine.objects.get(name="local").last_pass_at == before and before

        held_since = wait_for(held, timeout=30)
        healths = set()
        deadline = time.monotonic() + 3 * STALE_AFTER
        while time.monotonic() < deadline:
            healths.add(_engine_health()["health"])
            time.sleep(0.2)
        row = Engine.objects.get(name="local")
        assert row.last_pass_at == held_since  # one pass all along
        assert healths == {"ok"}
        assert timezone.now() - row.indexer_seen_at < timedelta(seconds=STALE_AFTER)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
