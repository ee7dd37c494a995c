"""Gunicorn settings for the web process, shared by `make run` (Procfile) and `bench/payments.py`.

Threaded workers (`gthread`): a request waiting on a slow channel holds a thread, not a process,
so the other threads keep serving. Two processes for the two cores of the reference machine;
`WEB_WORKERS` and `WEB_THREADS` change them.

Logs: gunicorn's own lines are JSON like the app's (`portal.logs.JsonFormatter`, or plain with
`PAYPLAT_LOG_FORMAT=text`); its access log is off, because the app writes one line per request
itself, with the request id and the tenant and without the query string (a checkout's carries the
PaymentIntent's client secret).

Metrics: the workers are separate processes, so `prometheus_client` runs in multiprocess mode:
every process writes its counters and histograms into `PROMETHEUS_MULTIPROC_DIR` and `/metrics`
sums them. When the variable is not set, a private directory is made here (and removed at exit);
`make run` sets one that the RQ workers share, so their job durations and payment outcomes show too.
"""

import os
import re
import shutil
import tempfile
from pathlib import Path

worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", "2"))
threads = int(os.environ.get("WEB_THREADS", "16"))

# --- logs ----------------------------------------------------------------------------------------

accesslog = None
_formatter = "portal.logs." + ("TextFormatter" if os.environ.get("PAYPLAT_LOG_FORMAT") == "text" else "JsonFormatter")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    # The root logger gets its handler from the app in each worker (portal.logs.configure).
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False, "qualname": "gunicorn.error"},
        # Gunicorn turns its access log on whenever logging is configured by a dict: silenced here.
        "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False, "qualname": "gunicorn.access"},
    },
    "filters": {"strip_query": {"()": "portal.logs.StripQueryStrings"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "app",
            "filters": ["strip_query"],
            "stream": "ext://sys.stderr",
        }
    },
    "formatters": {"app": {"()": _formatter}},
}

# --- metrics -------------------------------------------------------------------------------------

_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
_private_metrics_dir = None
if not os.environ.get(_MULTIPROC):
    # Before any worker imports prometheus_client: the mode is chosen when it is imported.
    _private_metrics_dir = tempfile.mkdtemp(prefix="payplat-metrics-")
    os.environ[_MULTIPROC] = _private_metrics_dir

_PID = re.compile(r"_(\d+)\.db$")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def on_starting(server):
    """Forget the values of processes that no longer run (an earlier gunicorn's workers); those of
    live processes sharing the directory (RQ workers) stay."""
    folder = Path(os.environ[_MULTIPROC])
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.glob("*.db"):
        match = _PID.search(path.name)
        if match and not _running(int(match.group(1))):
            path.unlink(missing_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _private_metrics_dir:
        shutil.rmtree(_private_metrics_dir, ignore_errors=True)


# The access log with secret-named query parameters (the checkout's client secret) redacted.
logger_class = "portal.log_redaction.GunicornLogger"
