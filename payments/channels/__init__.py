"""Channel adapters: one module per channel type, one registry, one contract (`payments.channels.base`).

`adapter_for(type, config)` builds a fresh adapter for one channel account. Adapters are never
cached by name or type: an adapter carries one tenant's credentials, and a shared one would hand
them to the next tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from payments.channels.base import ChannelAdapter, ChannelConfig, ChannelConfigError
from payments.channels.sandbox import SandboxAdapter
from payments.channels.stripe import StripeAdapter

ADAPTERS: Mapping[str, type[ChannelAdapter]] = MappingProxyType(
    {SandboxAdapter.type_name: SandboxAdapter, StripeAdapter.type_name: StripeAdapter}
)


def channel_types() -> list[str]:
    return sorted(ADAPTERS)


def adapter_for(channel_type: str, config: ChannelConfig) -> ChannelAdapter:
    adapter_class = ADAPTERS.get(channel_type)
    if adapter_class is None:
        channel = f"{config.name!r} ({channel_type})"
        raise ChannelConfigError(
            f"channel {channel} has the unknown type {channel_type!r}; known types: {', '.join(channel_types())}. "
            "Choose one in Console → Channels",
            channel=channel,
        )
    return adapter_class(config)
