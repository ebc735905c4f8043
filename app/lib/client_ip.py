"""The visitor's IP address, trusting X-Forwarded-For only when it comes from a proxy we run (TRUSTED_PROXIES).

Without this, every visitor behind a load balancer shares the proxy's address and one attacker's failed
sign-ins would lock everybody out.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

Network = IPv4Network | IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    return tuple(ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def is_trusted_proxy(address: str, trusted: tuple[Network, ...]) -> bool:
    """Whether ``address`` is one of our own proxies (whose headers we believe)."""
    return _trusted(address, trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """Walk X-Forwarded-For from the right, skipping our own proxies; the first other address is the client."""
    current = peer or "unknown"
    if not forwarded_for or not _trusted(current, trusted):
        return current
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        current = hop
        if not _trusted(hop, trusted):
            break
    return current
