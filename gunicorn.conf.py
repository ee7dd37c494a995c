"""Gunicorn settings for the web process, shared by `make run` (Procfile) and `bench/payments.py`.

Threaded workers (`gthread`): a request waiting on a slow channel holds a thread, not a process,
so the other threads keep serving. Two processes for the two cores of the reference machine;
`WEB_WORKERS` and `WEB_THREADS` change them.

Logs: gunicorn's own lines are JSON like the app's (`portal.logs.JsonFormatter`, or plain with
`PAYPLAT_LOG_FORMAT=text`); its access log is off, because the app writes one line per request
itself, with the request id and the tenant and without the query string (a checkout's carries the
PaymentIntent's client secret).
"""

import os

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
