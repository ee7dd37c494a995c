"""Reading pages in tests: sign in on a tenant's host, a response's text, a table by its id."""

from __future__ import annotations

import re
from html import unescape


def signed_in(site, tenant, email):
    """A test client on the tenant's host, signed in as `email` (with the test password)."""
    client = site(tenant.host)
    assert client.login(email).status_code == 302, f"{email} could not sign in"
    return client


def body(response) -> str:
    return response.get_data(as_text=True)


def text(fragment: str) -> str:
    """What a person reads in an HTML fragment: tags dropped, entities decoded, spaces folded."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", fragment))).strip()


def table(html: str, table_id: str) -> str:
    """The inside of `<table class="table…" id="table_id">`; fails the test when it is not there."""
    match = re.search(rf'<table class="table[^"]*" id="{table_id}">(.*?)</table>', html, re.S)
    assert match, f"no table {table_id} on the page"
    return match.group(1)
