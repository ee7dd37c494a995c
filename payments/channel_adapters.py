"""The adapter of a stored channel account: its decrypted credentials and settings, in the contract's terms.

Built fresh from the row for every use: an adapter carries one tenant's credentials (see `payments.channels`),
and an edit of the account (credentials, base URL, timeouts) applies to the next payment. Building one is cheap
and opens nothing: network connections belong to the process, not to an adapter (for Stripe, one pool per
process keyed by base URL and timeouts only, see `payments.channels.stripe.CLIENTS`), so payments reuse them
while each call carries its own account's credentials.
"""

from __future__ import annotations

from payments.channel_accounts import credentials_of
from payments.channels import adapter_for
from payments.channels.base import ChannelAdapter, ChannelConfig
from payments.models import ChannelAccount


def adapter_of(account: ChannelAccount) -> ChannelAdapter:
    settings = dict(account.settings or {})
    if account.base_url:
        settings["base_url"] = account.base_url
    return adapter_for(
        account.type,
        ChannelConfig(
            id=str(account.id),
            name=account.name,
            credentials=credentials_of(account),
            settings=settings,
            livemode=account.mode == "live",
        ),
    )
