"""Translatable messages for the core packages.

Use cases raise `InvalidInput` with messages people read on portal pages, so those are marked
for translation here: `gettext("%(code)s is not a currency.", code=code)`. The portal selects the
language per request; outside a request (jobs, CLI, tests calling use cases) and on the merchant
API (`/v1`, always English) the English text comes back unchanged. This wraps Flask-Babel's
functions, which need no request: core code never imports `portal` or `flask.request`.
"""

from __future__ import annotations

from flask_babel import gettext, lazy_gettext, ngettext

__all__ = ["gettext", "lazy_gettext", "ngettext"]
