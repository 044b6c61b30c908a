"""Multi-app workflows: deliveries between devengines that serve different app ids.

A workflow may start a child workflow or schedule an activity on another app (the SDK's `app_id`
sets the action's `router.targetAppID`). As daprd hands those to the target app's sidecar, a
devengine hands them to the devengine named for that app with `--peer APP=HOST:PORT`, and that
engine sends the results back the same way.

What one engine owes another is written to its outbox in the transaction of the turn (or result)
that produced it; the courier here sends it over gRPC until the peer accepts it, then forgets it.
A peer that is down or unknown only delays the delivery, as daprd retries until the target app
answers. The receiving engine keeps the key of every delivery it took, so one sent again after a
crash changes nothing.

A recursive purge is not a delivery: as daprd's, it asks the child's engine to purge the child
(and its own children) at once, and the parent is purged only if that worked.

The service (`devengine.Peers`) sits on the engine's gRPC port beside TaskHubSidecarService and
needs the same api token when one is set; its messages are JSON, not a Dapr protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import grpc

from devengine.engine import Engine, EngineError, delivery_body, parse_delivery

log = logging.getLogger("devengine")

SERVICE = "devengine.Peers"
DELIVER = f"/{SERVICE}/Deliver"
PURGE = f"/{SERVICE}/Purge"
DELIVERY_TIMEOUT = 10.0
# Seconds between attempts while a peer does not accept, growing with each failed round.
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
# gRPC waits up to two minutes between reconnects to a peer that was down: a purge asked
# after it is back would fail for that long. Kept to the outbox's own pace.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def parse_peer(text: str) -> tuple[str, str]:
    """("billing", "127.0.0.1:50002") from "billing=127.0.0.1:50002"."""
    app_id, sep, address = text.partition("=")
    if not sep or not app_id.strip() or ":" not in address:
        raise ValueError(f"not a peer: {text!r} (APP_ID=HOST:PORT)")
    return app_id.strip(), address.strip()


def add_peer_service(engine: Engine, server: grpc.aio.Server) -> None:
    """Serves the deliveries other engines send to this one."""

    async def deliver(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            engine.accept(request)
        except EngineError as e:
            await context.abort(e.code, e.message)
        return json.dumps({"app": engine.app_id}).encode()

    async def purge(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            asked = json.loads(request)
            app_id, instance_id, force = str(asked["app"]), str(asked["instance"]), asked["force"]
        except (ValueError, KeyError, TypeError) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad purge: {e}")
        if app_id != engine.app_id:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this engine serves app id {engine.app_id!r}, not {app_id!r}",
            )
        try:
            count = await engine.purge_for_other_app(instance_id, force is True)
        except EngineError as e:
            await context.abort(e.code, e.message)
        return json.dumps({"app": engine.app_id, "purged": count}).encode()

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Deliver": grpc.unary_unary_rpc_method_handler(deliver),
            "Purge": grpc.unary_unary_rpc_method_handler(purge),
        },
    )
    server.add_generic_rpc_handlers((handler,))


class Courier:
    """Sends the outbox to the peers, in order per app, until each delivery is accepted."""

    def __init__(self, engine: Engine, peers: dict[str, str], api_token: str | None):
        self.engine = engine
        self.peers = {app: address for app, address in peers.items() if app != engine.app_id}
        self.metadata = (("dapr-api-token", api_token),) if api_token else ()
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.wakeup = asyncio.Event()
        self.failing: set[str] = set()  # apps whose last delivery failed (said once a streak)
        self.task: asyncio.Task | None = None
        self.origin = engine.store.database_id()

    def start(self) -> None:
        self.engine.on_outgoing = self.wakeup.set
        self.engine.purge_on_other_app = self.purge
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for channel in self.channels.values():
            await channel.close()

    async def _run(self) -> None:
        failed_rounds = 0
        while True:
            self.wakeup.clear()
            try:
                waiting = await self.deliver_outbox()
            except Exception:
                log.exception("delivering to other apps failed")
                waiting = True
            timeout = None
            if waiting:
                timeout = RETRY_DELAYS[min(failed_rounds, len(RETRY_DELAYS) - 1)]
                failed_rounds += 1
            else:
                failed_rounds = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout)

    async def deliver_outbox(self) -> bool:
        """One round over the outbox; True if something is left for a later round."""
        store = self.engine.store
        store.flush()  # only what is committed leaves: a crash can't take back a delivery
        blocked: set[str] = set()
        for outgoing_id, app_id in store.outgoing():
            if app_id in blocked:
                continue  # keeps each app's deliveries in order
            body = self._stamped(outgoing_id, store.outgoing_body(outgoing_id))
            if await self._deliver(app_id, body):
                with store.transaction():
                    store.delete_outgoing(outgoing_id)
            else:
                blocked.add(app_id)
        return bool(blocked)

    def _stamped(self, outgoing_id: int, body: bytes) -> bytes:
        """The delivery as sent: named by this database and its outbox id, by which the
        receiver knows the deliveries before it are forgotten here (see remember_received)."""
        header, event = parse_delivery(body)
        header["origin"] = self.origin
        header["seq"] = outgoing_id
        return delivery_body(header, event)

    async def _deliver(self, app_id: str, body: bytes) -> bool:
        address = self.peers.get(app_id)
        if address is None:
            self._failed(app_id, f"no peer serves app id {app_id!r} (--peer {app_id}=HOST:PORT)")
            return False
        call = self._channel(app_id).unary_unary(DELIVER)
        try:
            answer = await call(body, timeout=DELIVERY_TIMEOUT, metadata=self.metadata)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                # Another app's engine at that address: a wrong --peer, never a delivery.
                self._failed(app_id, f"the peer at {address} refuses: {e.details()}", logging.ERROR)
            elif e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                # The sender's own limit let it through: the peer's --max-body-size is smaller.
                self._failed(
                    app_id,
                    f"a delivery of {len(body)} bytes is too big for the peer at {address} "
                    "(increase its --max-body-size and restart it)",
                    logging.ERROR,
                )
            else:
                self._failed(app_id, f"app {app_id!r} at {address}: {e.code().name} {e.details()}")
            return False
        answered = json.loads(answer).get("app")
        if answered != app_id:
            self._failed(
                app_id, f"the peer at {address} answers as app {answered!r}", logging.ERROR
            )
            return False
        if app_id in self.failing:
            self.failing.discard(app_id)
            log.info("delivering to app %r again", app_id)
        return True

    async def purge(self, app_id: str, instance_id: str, force: bool) -> int | None:
        """Has the engine of `app_id` purge one of its instances and its children, now: how
        many it purged, None if it does not have that instance. Raises EngineError when it
        can't, down included: unlike a delivery, a purge is not retried later, as daprd's
        fails when the child's app does not answer."""
        address = self.peers.get(app_id)
        if address is None:
            raise EngineError(
                grpc.StatusCode.UNAVAILABLE,
                f"no peer serves app id {app_id!r} (--peer {app_id}=HOST:PORT)",
            )
        await self._deliveries_sent(app_id, address)
        call = self._channel(app_id).unary_unary(PURGE)
        asked = {"app": app_id, "instance": instance_id, "force": force}
        try:
            answer = await call(
                json.dumps(asked).encode(), timeout=DELIVERY_TIMEOUT, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            if e.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INVALID_ARGUMENT):
                raise EngineError(e.code(), str(e.details())) from None
            raise EngineError(
                e.code(), f"app {app_id!r} at {address}: {e.code().name} {e.details()}"
            ) from None
        answered = json.loads(answer)
        if answered.get("app") != app_id:
            raise EngineError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the peer at {address} answers as app {answered.get('app')!r}",
            )
        return int(answered["purged"])

    async def _deliveries_sent(self, app_id: str, address: str) -> None:
        """Waits until the deliveries to `app_id` queued before now have been accepted: a
        child whose creation still waits in the outbox is not on that engine yet, which would
        take the purge for one of a child purged before and let it be created after its parent
        is gone. (Those queued later can't be about a child of a finished parent.)"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DELIVERY_TIMEOUT
        store = self.engine.store
        waiting = store.outgoing_ids(app_id)
        if waiting is None:
            return
        queued = waiting[1]
        while waiting is not None and waiting[0] <= queued:
            if loop.time() > deadline:
                raise EngineError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"app {app_id!r} at {address}: deliveries to it still wait in the outbox",
                )
            self.wakeup.set()  # the courier tries now rather than after its retry delay
            await asyncio.sleep(0.05)
            waiting = store.outgoing_ids(app_id)

    def _failed(self, app_id: str, reason: str, level: int = logging.WARNING) -> None:
        if app_id not in self.failing:
            self.failing.add(app_id)
            log.log(level, "deliveries to app %r wait (retried until accepted): %s", app_id, reason)

    def _channel(self, app_id: str) -> grpc.aio.Channel:
        channel = self.channels.get(app_id)
        if channel is None:
            channel = grpc.aio.insecure_channel(self.peers[app_id], options=CHANNEL_OPTIONS)
            self.channels[app_id] = channel
        return channel
