"""Nothing secret in the logs: a pytest plugin (loaded by tests/conftest.py) that keeps every log
record the suite emits and, when the session ends, looks in them for the secrets the tests made.

- A handler on the root logger, installed for the whole session, writes each record (logger,
  level, message with its traceback) to a file; the root logger is set to INFO, the level the app
  logs at in production (a test may lower it further with caplog). The output of subprocess
  workers is added with `add_output` (tests/workers.py does, when it stops them).
- Known secrets: the factories call `remember(kind, value)` for every password, API key, channel
  credential, webhook secret, TOTP secret... they create. Besides them, anything shaped like a
  full secret is caught by its pattern (sk_test_/sk_live_/rk_ keys, whsec_ secrets, client secrets).
- At the end, a line holding a secret fails the run: the exit status becomes 1 and the report names
  the secret's kind (never the secret) and the logger of the line. Under pytest-xdist each worker
  scans its own records and leaves its findings in the run's base temporary folder, which the
  controller reads at its own end.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

MIN_LENGTH = 8  # shorter values would match ordinary words
PATTERNS = (
    ("API secret key", re.compile(r"\b(?:sk|rk)_(?:test|live)_[A-Za-z0-9_\-]{24,}")),
    ("terminal device key", re.compile(r"\bdk_(?:test|live)_[A-Za-z0-9_\-]{24,}")),
    ("webhook signing secret", re.compile(r"\bwhsec_[A-Za-z0-9]{24,}")),
    ("payment client secret", re.compile(r"\b(?:pi|seti)_[A-Za-z0-9]+_secret_[A-Za-z0-9]{8,}")),
)
_WORD = re.compile(r"[A-Za-z0-9_\-]+")
FINDINGS = "logscan-{name}.json"

_known: dict[str, str] = {}  # secret -> its kind


def remember(kind: str, value: str | None) -> None:
    """Tell the scan about a secret a test created (`kind`: 'password', 'channel credential', ...)."""
    if value and len(value) >= MIN_LENGTH:
        _known.setdefault(value, kind)


class _FileHandler(logging.Handler):
    """Every record as one line: logger, level, message (newlines escaped, traceback included)."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.NOTSET)
        self.out = path.open("a", encoding="utf-8", errors="replace")
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record whose arguments do not fit its format: keep what there is
            text = f"{record.msg} {record.args}"
        self.write(record.name, record.levelname, text)

    def write(self, logger: str, level: str, text: str) -> None:
        line = text.replace("\\", "\\\\").replace("\n", "\\n")
        with self.lock:
            self.out.write(f"{logger}\t{level}\t{line}\n")

    def close(self) -> None:
        """Not now: `logging.config.fileConfig` (Alembic's env.py, at every migration) closes every handler."""

    def finish(self) -> Path:
        with self.lock:
            self.out.close()
        super().close()
        return Path(self.out.name)


_handler: _FileHandler | None = None


def _attach() -> None:
    """Keep the handler on the root logger and the root at INFO or lower: a migration's fileConfig
    replaces the root's handlers and level (alembic.ini), and a test may have changed them."""
    root = logging.getLogger()
    if _handler is not None and _handler not in root.handlers:
        root.addHandler(_handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    _attach()
    try:
        return (yield)
    finally:
        _attach()  # the fixtures just set up may have run the migrations


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    _attach()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item):
    _attach()
    return (yield)


def add_output(source: str, text: str) -> None:
    """Output of a subprocess (a worker's log file) to scan with the rest, as logger `source`."""
    if _handler is not None:
        for line in text.splitlines():
            _handler.write(source, "OUTPUT", line)


def scan_line(line: str) -> list[str]:
    """The kinds of secret in one line."""
    words = set(_WORD.findall(line))
    kinds = [_known[word] for word in words if word in _known]
    kinds += [kind for secret, kind in _known.items() if not _WORD.fullmatch(secret) and secret in line]
    kinds += [kind for kind, pattern in PATTERNS if pattern.search(line)]
    return sorted(set(kinds))


def scan_file(path: Path) -> list[dict[str, str]]:
    findings: list[dict[str, str]] = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            logger, level, message = (line.rstrip("\n").split("\t", 2) + ["", ""])[:3]
            for kind in scan_line(message):
                findings.append({"kind": kind, "logger": logger, "level": level, "where": f"{path}:{number}"})
    return findings


def _basetemp(config: pytest.Config) -> Path:
    return config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]


def _worker(config: pytest.Config) -> str | None:
    return getattr(config, "workerinput", {}).get("workerid")


def pytest_sessionstart(session: pytest.Session) -> None:
    global _handler
    path = _basetemp(session.config) / "logscan.log"
    _handler = _FileHandler(path)
    _attach()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    global _handler
    if _handler is None:
        return
    logging.getLogger().removeHandler(_handler)
    findings = scan_file(_handler.finish())
    _handler = None
    worker = _worker(session.config)
    if worker is not None:
        # The controller reads this in its own sessionfinish: a worker's exit status is not the run's.
        (_basetemp(session.config).parent / FINDINGS.format(name=worker)).write_text(json.dumps(findings))
        return
    for path in sorted(_basetemp(session.config).glob(FINDINGS.format(name="*"))):
        findings += json.loads(path.read_text())
    if findings:
        report(session, findings)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def report(session: pytest.Session, findings: list[dict[str, str]]) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{f['kind']}: logger {f['logger']!r}, {f['level']} record ({f['where']})" for f in findings]
    message = f"secrets in the log output: {len(findings)} line(s)\n" + "\n".join(lines[:50])
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "secrets in the log output", red=True, bold=True)
        for line in lines[:50]:
            reporter.write_line(line)
        if len(lines) > 50:
            reporter.write_line(f"... and {len(lines) - 50} more")
    else:
        print(message)
