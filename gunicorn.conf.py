"""Gunicorn settings for the web process, shared by `make run` (Procfile) and `bench/payments.py`.

Threaded workers (`gthread`): a request waiting on a slow channel holds a thread, not a process,
so the other threads keep serving. Two processes for the two cores of the reference machine;
`WEB_WORKERS` and `WEB_THREADS` change them.
"""

import os

worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", "2"))
threads = int(os.environ.get("WEB_THREADS", "16"))
# The access log with secret-named query parameters (the checkout's client secret) redacted.
logger_class = "portal.log_redaction.GunicornLogger"
