"""The sites a merchant lets show its hosted checkout in a frame (`Content-Security-Policy:
frame-ancestors`, written by `portal.security`).

The merchant's owner types host names or https origins, one per line (or separated by commas or
spaces): `shop.example.com`, `https://shop.example.com:8443`, `*.example.com`. Each is stored as
an https origin; anything else (another scheme, a path, an IP address, a character that is not
part of a host name) is refused with a message naming it, and nothing is changed.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

import sqlalchemy as sa

from core.db import db
from core.i18n import gettext
from tenants import audit
from tenants.errors import InvalidInput
from tenants.models import Merchant

MAX_DOMAINS = 20
FIELD = "frame_domains"
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SEPARATORS = re.compile(r"[\s,]+")


def _host(text: str, entry: str) -> str:
    """A lower-case DNS host name (`*.` allowed as the first label), else InvalidInput naming `entry`."""
    wildcard = text.startswith("*.")
    name = text[2:] if wildcard else text
    try:
        name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        name = ""
    labels = name.split(".")
    if (
        len(name) > 253
        or len(labels) < 2
        or not all(_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()  # an IPv4 address
    ):
        raise InvalidInput(
            gettext(
                "'%(entry)s' is not a host name: write a site such as shop.example.com, *.example.com "
                "or https://shop.example.com.",
                entry=entry,
            ),
            FIELD,
        )
    return f"*.{name}" if wildcard else name


def origin(entry: str) -> str:
    """`entry` as an https origin (`https://host[:port]`)."""
    text = entry.strip().rstrip("/")
    if "://" not in text:
        if "/" in text or "?" in text or "#" in text or "@" in text:
            raise InvalidInput(
                gettext("'%(entry)s' has a path: give only the site, such as shop.example.com.", entry=entry), FIELD
            )
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme.lower() != "https":
        raise InvalidInput(
            gettext("'%(entry)s' is not an https site: only secure (https) pages may show the checkout.", entry=entry),
            FIELD,
        )
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidInput(
            gettext("'%(entry)s' has a path: give only the site, such as shop.example.com.", entry=entry), FIELD
        )
    host = _host(parts.hostname or "", entry)
    return f"https://{host}" if port in (None, 443) else f"https://{host}:{port}"


def parse(text: str) -> list[str]:
    """The origins typed in `text`, in order, without repeats."""
    origins: list[str] = []
    for entry in _SEPARATORS.split(text or ""):
        if entry and (value := origin(entry)) not in origins:
            origins.append(value)
    if len(origins) > MAX_DOMAINS:
        raise InvalidInput(
            gettext("Give at most %(count)s sites.", count=MAX_DOMAINS),
            FIELD,
        )
    return origins


def set_allowed(tenant_id: uuid.UUID, merchant_id: uuid.UUID, text: str, actor: audit.Actor) -> list[str]:
    """Replace the merchant's list with the sites in `text` (empty: no site may frame the checkout);
    audited when it changes."""
    origins = parse(text)
    merchant = db.session.execute(
        sa.select(Merchant).where(Merchant.tenant_id == tenant_id, Merchant.id == merchant_id).with_for_update()
    ).scalar_one_or_none()
    if merchant is None:
        raise InvalidInput(gettext("Unknown merchant."))
    before = list(merchant.frame_domains or [])
    if before != origins:
        merchant.frame_domains = origins
        audit.record(
            tenant_id,
            actor,
            "merchant.frame_domains_changed",
            "merchant",
            merchant_id,
            audit.changes({FIELD: before}, {FIELD: origins}),
        )
    db.session.commit()
    return origins
