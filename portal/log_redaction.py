"""Secrets out of the request logs.

The hosted checkout's address carries the payment's client secret in its query string
(`/checkout/pi_…?client_secret=pi_…_secret_…`), and a page's address comes back as the Referer of
every request it makes. Access logs write both, so the value of a secret-named query parameter is
replaced by `[redacted]` before a request line or a Referer is logged:

- gunicorn's access log (`GunicornLogger`, the `logger_class` of gunicorn.conf.py);
- the development server's request log (werkzeug's logger, as `flask run` and the tests' servers
  use it), by `RedactingFilter`, installed by `create_app`.
"""

from __future__ import annotations

import logging
import re

from gunicorn.glogging import Logger

SECRET_PARAM = re.compile(r"((?:^|[?&;])(?:client_secret|secret|token|password|api_key)=)[^&;#\s\"']*", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with the values of secret-named query parameters replaced."""
    return SECRET_PARAM.sub(rf"\g<1>{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Redacts a record's message (rendered with its arguments) in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install() -> None:
    werkzeug = logging.getLogger("werkzeug")
    if not any(isinstance(f, RedactingFilter) for f in werkzeug.filters):
        werkzeug.addFilter(RedactingFilter())


class GunicornLogger(Logger):
    """gunicorn's logger, with the request line, query string and Referer redacted."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "q", "f", "{referer}i", "{raw_uri}e", "{query_string}e", "{http_referer}e"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact(atoms[key])
        return atoms
