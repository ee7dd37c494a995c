"""No client secret in the request logs: the development server's (werkzeug) and gunicorn's access
log write the checkout's address with its `client_secret` redacted, in the request line and the Referer."""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.error
import urllib.request
from datetime import timedelta
from types import SimpleNamespace

from gunicorn.config import Config
from werkzeug.serving import make_server

from portal.log_redaction import GunicornLogger, redact

SECRET = "pi_3Nabc123_secret_Zy09xWvUt8sR7qP6"


def test_secret_parameters_are_redacted_and_the_rest_is_kept():
    assert redact(f"GET /checkout/pi_3Nabc123?client_secret={SECRET}&lang=de HTTP/1.1") == (
        "GET /checkout/pi_3Nabc123?client_secret=[redacted]&lang=de HTTP/1.1"
    )
    assert redact("/v1/payment_intents?limit=3") == "/v1/payment_intents?limit=3"


def test_the_development_server_logs_the_checkout_address_without_its_secret(app, caplog):
    caplog.set_level(logging.INFO, logger="werkzeug")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # urllib, not httpx: httpx logs the address it requests (with the secret) itself.
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/checkout/pi_3Nabc123?client_secret={SECRET}")
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    # The request is logged (its query string redacted, or left out by portal.logs), the secret never.
    assert any("GET /checkout/pi_3Nabc123" in line for line in lines), lines
    assert not any(SECRET in line for line in lines)


def test_gunicorns_access_log_has_no_secret_in_the_request_line_or_referer(tmp_path):
    config = Config()
    config.set("accesslog", str(tmp_path / "access.log"))
    logger = GunicornLogger(config)
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/checkout/pi_3Nabc123?client_secret={SECRET}",
        "PATH_INFO": "/checkout/pi_3Nabc123",
        "QUERY_STRING": f"client_secret={SECRET}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_REFERER": f"https://acme.example.com/checkout/pi_3Nabc123?client_secret={SECRET}",
    }
    response = SimpleNamespace(status="200 OK", sent=10, headers=[])
    logger.access(response, SimpleNamespace(headers=[]), environ, timedelta(milliseconds=5))
    for handler in logger.access_log.handlers:
        handler.flush()
    written = (tmp_path / "access.log").read_text()
    assert "GET /checkout/pi_3Nabc123?client_secret=[redacted] HTTP/1.1" in written
    assert "https://acme.example.com/checkout/pi_3Nabc123?client_secret=[redacted]" in written
    assert SECRET not in written
