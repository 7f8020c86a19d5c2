"""Which network addresses the bot may fetch provider-named URLs from.

A provider's answer can name any URL for an image. Fetching it blindly would let the answer
(or whoever controls the provider's output) make the bot reach services only it can reach:
the host's own ports, the local network, a cloud metadata endpoint (169.254.169.254). So a
host is resolved (``loop.getaddrinfo``, off the event loop) and refused unless every address
it resolves to is public; the caller then connects to one of those checked addresses, so a
second lookup cannot answer differently.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

__all__ = ["AddressCheck", "IPAddress", "blocked_reason", "resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressCheck = Callable[[IPAddress], str | None]

# NAT64 (RFC 6052): where it is deployed, 64:ff9b::a00:1 reaches the IPv4 address 10.0.0.1.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def blocked_reason(address: IPAddress) -> str | None:
    """Why the bot will not connect to ``address`` ("loopback", "private", ...), or ``None``
    for a public address. IPv4 addresses carried in IPv6 ones are judged as themselves."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return blocked_reason(address.ipv4_mapped)
        if address in _NAT64:
            return blocked_reason(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not public", not address.is_global),
    )
    return next((reason for reason, hit in checks if hit), None)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order (a literal address is
    itself). Raises ``OSError`` (``socket.gaierror``) when it does not resolve."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in found:
            found.append(address)
    return found
