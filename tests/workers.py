"""Workers in their own processes for tests that kill them: `python -m flask worker` on the test
database and Redis, each in its own process group, all killed at the end whatever happened."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import logscan
import pytest

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Wait until `predicate()` is truthy (returned), or fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # between two looks at the condition, never to synchronise by itself


class Workers:
    """`python -m flask worker` subprocesses on the test database and Redis; each in its own process group,
    all of them killed at the end whatever happened."""

    def __init__(self, app, owner_url: str, folder: Path):
        self.folder = folder
        self.env = {
            **os.environ,
            "FLASK_APP": "wsgi.py",
            "DATABASE_URL": owner_url,
            "PAYPLAT_APP_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": app.config["REDIS_URL"],
            "PAYPLAT_SECRET_KEY": app.config["SECRET_KEY"],
            "PAYPLAT_ENCRYPTION_KEYS": ",".join(app.config["ENCRYPTION_KEYS"]),
            "PAYPLAT_INSTANCE_DIR": str(folder / "instance"),
            "PYTHONUNBUFFERED": "1",
        }
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, *args: str, queue: str = "channels") -> subprocess.Popen:
        log = self.folder / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flask", "worker", "--queue", queue, *args],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append((proc, log))
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for _, log in self.started)

    def stop_all(self) -> None:
        for proc, _ in self.started:
            # The whole group, before reaping the leader (so its group id cannot have been reused): the
            # worker and whatever it forked (its scheduler).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for _, log in self.started:  # what the workers logged goes through the log scan too
            logscan.add_output(f"worker {log.stem}", log.read_text(errors="replace"))
