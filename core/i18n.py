"""Translatable messages for the core packages.

Use cases raise `InvalidInput` with messages people read on portal pages, so those are marked
for translation here: `gettext("%(code)s is not a currency.", code=code)`. The portal selects the
language per request; outside a request (jobs, CLI, tests calling use cases) and on the merchant
API (`/v1`, always English) the English text comes back unchanged. This wraps Flask-Babel's
functions, which need no request: core code never imports `portal` or `flask.request`.

Module-level labels use `lazy_gettext` and translate when shown. What is stored or audited stays
English whoever's request writes it: compose such text inside `with english():`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask_babel import force_locale, get_locale, gettext, lazy_gettext, ngettext

__all__ = ["current_locale", "english", "gettext", "lazy_gettext", "ngettext", "speaking"]


@contextmanager
def english() -> Iterator[None]:
    """Messages in English inside the block, whatever the request's language (for text that is
    stored: audit records, database rows, files)."""
    with force_locale("en"):
        yield


def current_locale() -> str:
    """The language messages are in now (the request's, else English), e.g. "zh" or "en"."""
    locale = get_locale()
    return str(locale) if locale is not None else "en"


@contextmanager
def speaking(locale: str | None) -> Iterator[None]:
    """Messages in `locale` inside the block (None: English), e.g. a job writing a file for the
    person who asked for it."""
    with force_locale(locale or "en"):
        yield
