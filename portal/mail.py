"""E-mail in the tenant's brand, delivered by an RQ job.

`send()` renders `email/<name>.subject.txt`, `.txt` and `.html` through the brand's theme, in
the recipient's language (`locale`: their own choice, else the tenant's default; see
`portal.i18n.recipient_locale`), and queues delivery on the `mail` queue (when Redis is away,
it delivers at once instead). The From name is the
tenant's display name and the address is on the tenant's own domain, so no e-mail carries the platform's brand.
Backends: `file` (development: one .eml per message under instance/mail/), `console` (log),
`smtp` (when PAYPLAT_SMTP_HOST is set).
"""

from __future__ import annotations

import logging
import smtplib
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from pathlib import Path
from typing import Any

from flask import current_app, g
from redis.exceptions import RedisError
from rq import Retry

from portal import i18n, jobs, theming

log = logging.getLogger(__name__)


def send(to: str, name: str, brand, sender_domain: str, locale: str = "en", **context: Any) -> dict[str, Any]:
    """Render the `name` e-mail in `brand` and `locale` and queue it. Returns the queued message."""
    saved_brand = getattr(g, "brand", None)
    g.brand = brand
    try:
        with i18n.language(locale):
            subject = theming.render(f"email/{name}.subject.txt", **context).strip()
            text = theming.render(f"email/{name}.txt", **context)
            html = theming.render(f"email/{name}.html", **context)
    finally:
        g.brand = saved_brand
    local = current_app.config["MAIL_SENDER_LOCALPART"]
    message = {
        "to": to,
        "subject": subject,
        "text": text,
        "html": html,
        "from": formataddr((brand.display_name, f"{local}@{sender_domain}")),
        "reply_to": brand.support_email,
        "message_id": make_msgid(domain=sender_domain),
    }
    try:
        jobs.enqueue("mail", deliver, message, retry=Retry(max=5, interval=[10, 30, 60, 300, 900]))
    except RedisError:
        # The queue is away: hand the message over now rather than lose it (or fail the page that sends it).
        log.warning("the mail queue is unavailable: delivering %s now", message["message_id"])
        deliver(message)
    return message


def build(message: dict[str, Any]) -> EmailMessage:
    email = EmailMessage()
    email["From"] = message["from"]
    email["To"] = message["to"]
    email["Subject"] = message["subject"]
    email["Message-ID"] = message["message_id"]
    email["Date"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    if message.get("reply_to"):
        email["Reply-To"] = message["reply_to"]
    email.set_content(message["text"])
    email.add_alternative(message["html"], subtype="html")
    return email


def deliver(message: dict[str, Any]) -> str:
    """The job: hand one message to the configured backend. Safe to run twice (file names and
    SMTP Message-ID are stable, so a retried delivery is recognisable as the same message)."""
    cfg = current_app.config
    email = build(message)
    backend = cfg["MAIL_BACKEND"]
    if backend == "file":
        folder = Path(cfg["MAIL_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid5(uuid.NAMESPACE_URL, message["message_id"]).hex + ".eml"
        (folder / name).write_bytes(bytes(email))
        log.info("mail to %s written to %s", message["to"], folder / name)
        return str(folder / name)
    if backend == "console":
        log.info("mail to %s: %s\n%s", message["to"], message["subject"], message["text"])
        return "console"
    if backend == "smtp":
        with smtplib.SMTP(cfg["SMTP_HOST"], cfg["SMTP_PORT"], timeout=30) as smtp:
            if cfg["SMTP_STARTTLS"]:
                smtp.starttls()
            if cfg["SMTP_USERNAME"]:
                smtp.login(cfg["SMTP_USERNAME"], cfg["SMTP_PASSWORD"] or "")
            smtp.send_message(email)
        return "smtp"
    raise RuntimeError(f"PAYPLAT_MAIL_BACKEND={backend!r} is unknown: use file, console or smtp")
