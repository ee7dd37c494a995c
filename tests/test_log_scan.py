"""The log scan (tests/logscan.py) really fails a run: pytest, in a subprocess, on a tiny test file
that logs a secret, with and without pytest-xdist, exits non-zero naming the secret's kind and the
logger; the same file logging nothing secret passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

LEAKY = """
import logging

import logscan


def pytest_configure(config):
    config.pluginmanager.register(logscan, "logscan")


# tests
def test_a_password_is_logged():
    secret = "hunter2-but-longer"
    logscan.remember("password", secret)
    logging.getLogger("portal.auth").info("signing in with %s", secret)


def test_an_api_key_is_logged_inside_a_traceback():
    try:
        raise ValueError("bad key sk_live_" + "Ab3_" * 10)
    except ValueError:
        logging.getLogger("payments.api").exception("request failed")


def test_a_debug_record_of_a_quiet_logger_is_scanned_too(caplog):
    caplog.set_level("DEBUG", logger="clearing.payouts")
    logging.getLogger("clearing.payouts").debug("whsec_" + "x" * 32)


@pytest.fixture
def migrated():
    # What Alembic's env.py does at every migration: replace (and close) the root's handlers, level WARNING.
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}})


def test_a_record_after_the_logging_was_reconfigured(migrated):
    logging.getLogger("payments.webhooks").info("delivering with pi_123abc_secret_0123456789abcdef")
"""

CLEAN = """
import logging

import logscan


def pytest_configure(config):
    config.pluginmanager.register(logscan, "logscan")


# tests
def test_nothing_secret():
    logging.getLogger("portal.auth").warning("signed in with sk_test_…abcd (masked)")
"""


def _run(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess:
    folder = tmp_path / "suite"
    folder.mkdir()
    conftest, tests = source.split("\n\n\n# tests\n")
    (folder / "conftest.py").write_text(conftest)
    (folder / "test_logging.py").write_text("import logging.config\n\nimport logscan\nimport pytest\n" + tests)
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--rootdir={folder}", "-c", os.devnull, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["one process", "xdist"])
def test_a_secret_in_the_logs_fails_the_run_and_is_named(tmp_path, xdist):
    result = _run(tmp_path, LEAKY, *xdist)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "4 passed" in output  # the tests themselves pass: the scan fails the run
    assert "secrets in the log output" in output
    assert "password: logger 'portal.auth', INFO record" in output
    assert "API secret key: logger 'payments.api', ERROR record" in output
    assert "webhook signing secret: logger 'clearing.payouts', DEBUG record" in output
    assert "payment client secret: logger 'payments.webhooks', INFO record" in output
    assert "hunter2-but-longer" not in output  # the report names the kind, never the secret


def test_a_run_without_secrets_in_its_logs_passes(tmp_path):
    result = _run(tmp_path, CLEAN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "secrets in the log output" not in result.stdout
