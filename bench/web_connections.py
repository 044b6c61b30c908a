"""Latency of the instance list served by daphne on PostgreSQL, and the connections daphne holds,
with a new connection for each request against the web processes' connection pool.

    python bench/web_connections.py [--instances 5000] [--threads 4] [--requests 400] [--record]

Starts a PostgreSQL cluster in a temporary directory on 127.0.0.1 as the test setup does, but
asking for a password over TCP (scram-sha-256, as a deployment would), migrates and fills it
(bench/list_query.py's fill). Then for each setting (``CONSOLE_DB_POOL_MAX=0``: no pool, a
connection opened and closed for each request; the default pool) it starts daphne on it, and
client threads (each with its own HTTP connection and a logged-in session) GET the instance list
page and the API's list in turn. Reports the median and p95 latency as the clients saw it, the
connections PostgreSQL opened for the run (``pg_stat_database.sessions``), the most connections
daphne held at once (``pg_stat_activity`` sampled every 20 ms), and those it held 2 s after.
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import REPO_ROOT, append_result, free_port, machine, p95  # noqa: E402
from detail_page import close_connections, setup_django  # noqa: E402
from list_query import fill_postgres  # noqa: E402

PASSWORD = "bench-" + secrets.token_hex(8)
URLS = ("/instances/", "/api/instances/")
SETTINGS = (("no pool, a connection per request", "0"), ("pool (default)", ""))


def start_postgres(stack: ExitStack) -> str:
    """A cluster as the tests start one, then a password and scram-sha-256 for TCP; its URL."""
    sys.path.insert(0, str(REPO_ROOT))
    import psycopg

    from tests.console import pgcluster

    cluster = pgcluster.start()
    stack.callback(cluster.stop)
    stack.callback(close_connections)
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres") as conn:
        conn.autocommit = True
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(f"ALTER ROLE postgres PASSWORD '{PASSWORD}'")
        conn.execute("CREATE DATABASE console")
    hba = Path(cluster.data_dir) / "pg_hba.conf"
    lines = hba.read_text().splitlines()
    hba.write_text(
        "\n".join(
            line.replace("trust", "scram-sha-256") if line.startswith("host") else line
            for line in lines
        )
        + "\n"
    )
    pg_ctl = os.path.join(cluster.bin_dir, "pg_ctl")
    reload = cluster._cmd(pg_ctl, "-D", cluster.data_dir, "reload")
    subprocess.run(reload, check=True, capture_output=True)
    time.sleep(0.5)
    return f"postgres://postgres:{PASSWORD}@127.0.0.1:{cluster.port}/console"


class Sampler(threading.Thread):
    """Counts the console database's client connections but its own, every 20 ms."""

    QUERY = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'console' "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.conn = psycopg.connect(url.replace("postgres://", "postgresql://"), autocommit=True)
        self.most = 0
        self.stop = threading.Event()

    def count(self) -> int:
        return int(self.conn.execute(self.QUERY).fetchone()[0])  # type: ignore[index]

    def sessions(self) -> int:
        self.conn.execute("SELECT pg_stat_force_next_flush()")
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = 'console'"
        ).fetchone()
        return int(row[0])  # type: ignore[index]

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.most = max(self.most, self.count())


def load(port: int, cookie: str, threads: int, requests: int) -> list[float]:
    """``requests`` GETs spread over ``threads`` clients; their latencies in ms."""
    latencies: list[float] = []
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            get(n)
        except BaseException as exc:  # noqa: BLE001 - raised again by the caller
            errors.append(exc)

    def get(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(n):
            t0 = time.perf_counter()
            conn.request("GET", URLS[i % 2], headers={"Cookie": f"sessionid={cookie}"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, (URLS[i % 2], response.status)
            latencies.append((time.perf_counter() - t0) * 1000)
        conn.close()

    workers = [threading.Thread(target=client, args=(requests // threads,)) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return latencies


def measure(url: str, pool_max: str, cookie: str, args: argparse.Namespace) -> dict[str, float]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CONSOLE_DB_POOL_MAX": pool_max,
        "CONSOLE_ALLOWED_HOSTS": "127.0.0.1",
        "CONSOLE_LOG_LEVEL": "WARNING",
    }
    daphne = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(args.port),
         "console.asgi:application"],
        cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        load(args.port, cookie, args.threads, args.threads * 10)
        sampler = Sampler(url)
        before = sampler.sessions()
        sampler.start()
        latencies = load(args.port, cookie, args.threads, args.requests)
        sampler.stop.set()
        sampler.join()
        opened = sampler.sessions() - before
        time.sleep(2)
        after = sampler.count()
        sampler.conn.close()
    finally:
        daphne.terminate()
        daphne.wait(30)
    return {
        "median": statistics.median(latencies),
        "p95": p95(latencies),
        "opened": opened,
        "most": sampler.most,
        "after": after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--port", type=int, default=0, help="daphne's (default: a free one)")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    args.port = args.port or free_port()
    load_before = os.getloadavg()[0]
    # The bench process and daphne sign sessions with the same key.
    os.environ["CONSOLE_SECRET_KEY"] = secrets.token_urlsafe(50)

    with ExitStack() as stack:
        url = start_postgres(stack)
        setup_django(None, url)
        from django.contrib.auth.models import User
        from django.test import Client

        fill_postgres(args.instances)
        client = Client()
        client.force_login(User.objects.create_user("bench"))
        cookie = client.cookies["sessionid"].value
        close_connections()
        rows = []
        for label, pool_max in SETTINGS:
            figures = measure(url, pool_max, cookie, args)
            rows.append((label, figures))
            print(
                f"{label:34} median {figures['median']:5.1f} ms  p95 {figures['p95']:5.1f} ms  "
                f"opened {figures['opened']:.0f}  most {figures['most']:.0f}  "
                f"2 s after {figures['after']:.0f}"
            )
    if args.record:
        record(args, rows, load_before)


def record(args: argparse.Namespace, rows: list, load: float) -> None:
    cmd = "python bench/web_connections.py"
    lines = [
        f"{args.instances:,} instances on PostgreSQL (password over TCP); daphne; {args.threads} "
        f"client threads, {args.requests} GETs of `/instances/` and `/api/instances/` in turn, "
        "logged in; latency as the clients saw it.",
        "",
        "| setting | median | p95 | connections opened | held at most | held 2 s after |",
        "|---|---|---|---|---|---|",
    ]
    for label, f in rows:
        lines.append(
            f"| {label} | {f['median']:.1f} ms | {f['p95']:.1f} ms | {f['opened']:.0f} | "
            f"{f['most']:.0f} | {f['after']:.0f} |"
        )
    line = f"{machine()}, load average before the run {load:.2f}"
    append_result("web_connections", cmd, line, "\n".join(lines))


if __name__ == "__main__":
    main()
