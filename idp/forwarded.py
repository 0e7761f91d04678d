"""The client's address behind reverse proxies: one rule for throttles, audit and the card host.

``X-Forwarded-For`` is written by whoever sends the request, so it counts only when the TCP
peer is one of ``IDP_TRUSTED_PROXIES``. Then the list is read from the right (each proxy
appends the address it saw), skipping the trusted proxies, and the first address that is not
one of them is the client. A client can prepend anything it likes: it never gets past the
hop our own proxy appended. Pure functions: no Flask.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_FORWARDED_HOPS = 20


class TrustedProxyConfigError(ValueError):
    """``IDP_TRUSTED_PROXIES`` holds something that is not an address or network."""


def parse_trusted_proxies(value: str) -> tuple[IPNetwork, ...]:
    """Comma- or space-separated addresses and CIDR networks."""
    networks = []
    for item in re.split(r"[\s,]+", (value or "").strip()):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise TrustedProxyConfigError(
                f"IDP_TRUSTED_PROXIES: {item!r} is not an address"
            ) from exc
    return tuple(networks)


def parse_address(value: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted_proxy(*, remote_addr: str, trusted_proxies: Sequence[IPNetwork]) -> bool:
    address = parse_address(remote_addr)
    return address is not None and any(address in network for network in trusted_proxies)


def client_address(
    *, remote_addr: str, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]
) -> str:
    """The address to throttle and audit for this request."""
    peer = parse_address(remote_addr)
    if peer is None:
        return (remote_addr or "unknown")[:64]
    if not any(peer in network for network in trusted_proxies) or not forwarded_for:
        return str(peer)
    client = peer
    hops = [hop.strip() for hop in forwarded_for.split(",")][-MAX_FORWARDED_HOPS:]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            break  # garbage from the client side: the last trusted hop is all we know
        client = address
        if not any(address in network for network in trusted_proxies):
            break
    return str(client)
