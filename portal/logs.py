"""Structured logs: every line of the web app and the workers is one JSON object.

Each line carries `time` (UTC, ISO 8601), `level`, `logger`, `message`, `request_id` and
`tenant_id` (null outside a request or a tenant), `job_id` inside a job, and whatever `extra` the
call passed. The context fields come from a log record factory, so every record has them, whoever
formats it (the JSON handler, pytest's capture, gunicorn's handlers).

A request gets an id from a sane incoming `X-Request-ID` header, else a new one; the response
echoes it. One line per request (logger `portal.request`): method, path, endpoint, status,
duration_ms. Never logged: query strings (a PaymentIntent's `client_secret` travels in the
checkout's), the values of path parts that are tokens (password reset, invitation, sign-up
links), headers (Authorization, cookies) and bodies. The werkzeug development server's and
gunicorn's own request lines lose their query strings too (`StripQueryStrings`).

`PAYPLAT_LOG_FORMAT=text` gives plain lines for reading in a terminal; `PAYPLAT_LOG_LEVEL` the level.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from flask import Flask, g, request
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from tenants import isolation

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is kept only when it is short and plain: it is echoed and written into every line.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}")
# View arguments whose values are secrets (signed single-use links): their value never reaches a log.
SECRET_VIEW_ARGS = re.compile(r"token|secret|password|key", re.IGNORECASE)
REDACTED = "[redacted]"

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_job_id: ContextVar[str | None] = ContextVar("job_id", default=None)

request_log = logging.getLogger("portal.request")


def current_request_id() -> str | None:
    return _request_id.get()


def bind_job(job_id: str | None):
    """Name the job whose lines follow (returns a token for `unbind_job`)."""
    return _job_id.set(job_id)


def unbind_job(token) -> None:
    _job_id.reset(token)


# --- every record carries the context ------------------------------------------------------------

_base_factory = logging.getLogRecordFactory()


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = _request_id.get()
    tenant = isolation.current_tenant_id()
    record.tenant_id = str(tenant) if tenant else None
    job = _job_id.get()
    if job is not None:
        record.job_id = job
    return record


def install_record_factory() -> None:
    """Idempotent: the factory wraps the one logging had before this module was imported."""
    if logging.getLogRecordFactory() is not _record_with_context:
        logging.setLogRecordFactory(_record_with_context)


# --- formatting ----------------------------------------------------------------------------------


class JsonFormatter(_JsonFormatter):
    """`{"time", "level", "logger", "message", "request_id", "tenant_id", ...extra}` on one line.
    Also usable by gunicorn's `logconfig_dict` (`"()": "portal.logs.JsonFormatter"`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("reserved_attrs", [*RESERVED_ATTRS, "request_id", "tenant_id"])
        super().__init__(*args, **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        log_data["request_id"] = getattr(record, "request_id", None)
        log_data["tenant_id"] = getattr(record, "tenant_id", None)
        super().add_fields(log_data, record, message_dict)


class TextFormatter(logging.Formatter):
    """Plain lines with the context, for a terminal (`PAYPLAT_LOG_FORMAT=text`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s %(tenant_id)s]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.__dict__.setdefault("request_id", None)
        record.__dict__.setdefault("tenant_id", None)
        return super().format(record)


# A request line's target: `GET /checkout/pi_1?client_secret=... HTTP/1.1` -> everything before `?`.
_QUERY = re.compile(r"(/[^\s?\"]*)\?[^\s\"]*")


def strip_query(text: str) -> str:
    return _QUERY.sub(r"\1", text)


class StripQueryStrings(logging.Filter):
    """Drops the query string from the URLs in a record's message and arguments (the request lines
    of werkzeug's development server and gunicorn's errors name the full target)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = strip_query(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(strip_query(a) if isinstance(a, str) else a for a in record.args)
        return True


_OURS = "_payplat_handler"


def configure(app: Flask) -> None:
    """Context on every record; a JSON (or text) handler on the root logger unless testing or the
    root logger has handlers of someone else's; request ids and the request line."""
    app.config.setdefault("LOG_FORMAT", os.environ.get("PAYPLAT_LOG_FORMAT", "json"))
    app.config.setdefault("LOG_LEVEL", os.environ.get("PAYPLAT_LOG_LEVEL", "INFO"))
    install_record_factory()
    werkzeug_log = logging.getLogger("werkzeug")
    if not any(isinstance(f, StripQueryStrings) for f in werkzeug_log.filters):
        werkzeug_log.addFilter(StripQueryStrings())
    # httpx logs every request's whole URL at INFO: a merchant's webhook URL may carry a token, a
    # checkout link its client secret. The app's channel and webhook code logs what it needs itself.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    root = logging.getLogger()
    theirs = [h for h in root.handlers if not getattr(h, _OURS, False)]
    # Like logging.basicConfig: a root logger someone else configured (pytest's capture) is left alone.
    if not app.testing and not theirs:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TextFormatter() if app.config.get("LOG_FORMAT") == "text" else JsonFormatter())
        setattr(handler, _OURS, True)
        root.addHandler(handler)
        root.setLevel(str(app.config["LOG_LEVEL"]).upper())
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)


def _start_request() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    g.request_id = request_id
    g.request_started = time.perf_counter()
    g.request_id_token = _request_id.set(request_id)


def loggable_path() -> str:
    """The request's path without its query string, with the values of secret path parts replaced."""
    path = request.path
    for name, value in (request.view_args or {}).items():
        if SECRET_VIEW_ARGS.search(name) and isinstance(value, str) and value:
            path = path.replace(value, REDACTED)
    return path


def _finish_request(response):
    request_id = getattr(g, "request_id", None)
    if request_id is None:  # a request that failed before the first hook: still gets an id
        request_id = uuid.uuid4().hex
    response.headers[REQUEST_ID_HEADER] = request_id
    started = getattr(g, "request_started", None)
    path = loggable_path()
    request_log.info(
        "%s %s %s",
        request.method,
        path,
        response.status_code,
        extra={
            "method": request.method,
            "path": path,
            "endpoint": request.endpoint,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1) if started is not None else None,
        },
    )
    return response


def _end_request(_exc=None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        try:
            _request_id.reset(token)
        except ValueError:  # set in another context (cannot happen with Flask's own hooks): forget it anyway
            _request_id.set(None)
