"""`python -m devengine`: a Dapr-compatible workflow engine on one gRPC port."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re

from devengine.engine import DEFAULT_MAX_BODY_SIZE
from devengine.peers import parse_peer
from devengine.retention import parse_retention
from devengine.server import serve

# The suffixes of a Kubernetes quantity, as daprd's --max-body-size reads them.
SIZE_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def parse_size(text: str) -> int:
    """Bytes from "4194304", "4Mi", "512Ki", "2M"...; zero or less means no limit."""
    match = re.fullmatch(r"(-?\d+)(k|M|G|Ki|Mi|Gi)?", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (bytes, or a number with Ki, Mi, Gi, k, M or G)"
        )
    return int(match[1]) * SIZE_UNITS[match[2] or ""]


def _peer(text: str) -> tuple[str, str]:
    try:
        return parse_peer(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devengine",
        description="A Dapr-compatible workflow engine (TaskHubSidecarService over gRPC, SQLite).",
    )
    parser.add_argument("--port", type=int, default=50001, help="gRPC port (default 50001)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default loopback)"
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="also serve daprd's workflow HTTP API on this port (e.g. 3500; default off)",
    )
    parser.add_argument("--db", required=True, help="SQLite database file (created if missing)")
    parser.add_argument(
        "--api-token",
        default=os.environ.get("DEVENGINE_API_TOKEN"),
        help="require this dapr-api-token on every call (or DEVENGINE_API_TOKEN)",
    )
    parser.add_argument("--app-id", default="devengine", help="the app id this engine serves")
    parser.add_argument(
        "--peer",
        action="append",
        type=_peer,
        default=None,
        metavar="APP_ID=HOST:PORT",
        help="the devengine serving another app id, for child workflows and activities a workflow "
        "runs on that app (repeatable; or DEVENGINE_PEERS, comma-separated)",
    )
    parser.add_argument(
        "--max-body-size",
        type=parse_size,
        default=DEFAULT_MAX_BODY_SIZE,
        metavar="SIZE",
        help="largest gRPC message and HTTP request body, as daprd's (default 4Mi; 0 or less: "
        "no limit); a workflow whose work item would not fit in 95%% of it is stalled",
    )
    parser.add_argument(
        "--state-retention",
        action="append",
        default=None,
        metavar="STATE=DURATION",
        help="purge a workflow this long after it ended in STATE (anyTerminal, completed, failed "
        "or terminated; a Go duration such as 72h, 30m, 1h30m, 0s), as daprd's "
        "stateRetentionPolicy; the state's own duration wins over anyTerminal (repeatable or "
        "comma-separated; or DEVENGINE_STATE_RETENTION; default: kept for good)",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="uvloop (default) or the standard library's loop",
    )
    args = parser.parse_args(argv)
    if args.peer is None:
        try:
            args.peer = [
                parse_peer(p) for p in os.environ.get("DEVENGINE_PEERS", "").split(",") if p
            ]
        except ValueError as e:
            parser.error(f"DEVENGINE_PEERS: {e}")
    retention_values = args.state_retention
    if retention_values is None:
        retention_values = [os.environ.get("DEVENGINE_STATE_RETENTION", "")]
    try:
        retention = parse_retention(retention_values)
    except ValueError as e:
        where = "--state-retention" if args.state_retention else "DEVENGINE_STATE_RETENTION"
        parser.error(f"{where}: {e}")
    # Each line names the app: the engines of several apps often share a terminal (make run).
    app = args.app_id.replace("%", "%%")
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {app} %(name)s: %(message)s",
    )
    server = serve(
        args.host,
        args.port,
        args.db,
        args.api_token,
        args.app_id,
        http_port=args.http_port,
        max_body_size=args.max_body_size,
        peers=dict(args.peer),
        retention=retention,
    )
    if args.event_loop == "uvloop":
        # Most of the engine's CPU goes to gRPC's per-call work on the event loop; uvloop's loop
        # makes each call about a tenth cheaper (bench/RESULTS.md).
        import uvloop

        uvloop.run(server)
    else:
        asyncio.run(server)


if __name__ == "__main__":
    main()
