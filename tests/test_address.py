"""``bot.provider.address``: which addresses image URLs may name, and resolution off the loop."""

from __future__ import annotations

import ipaddress

import pytest

from bot.provider.address import blocked_reason, resolve


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.3.4.5", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "not public"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("93.184.215.14", None),
        ("2606:4700::6810:84e5", None),
        ("::ffff:93.184.215.14", None),
    ],
)
def test_only_public_addresses_pass(address: str, reason: str | None) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


async def test_a_literal_address_is_itself_and_a_name_is_looked_up() -> None:
    assert await resolve("10.0.0.7", 80) == [ipaddress.ip_address("10.0.0.7")]
    assert await resolve("::1", 80) == [ipaddress.ip_address("::1")]
    found = await resolve("localhost", 80)
    assert found and all(address.is_loopback for address in found)


async def test_a_name_that_does_not_resolve_raises_oserror() -> None:
    with pytest.raises(OSError):
        await resolve("no-such-host.invalid", 80)
