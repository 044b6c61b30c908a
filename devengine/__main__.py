"""`python -m devengine`: a Dapr-compatible workflow engine on one gRPC port."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from devengine.server import serve


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
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="uvloop (default) or the standard library's loop",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = serve(
        args.host, args.port, args.db, args.api_token, args.app_id, http_port=args.http_port
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
