"""Where a webhook may be sent: public addresses only, unless the operator allows a network (issue 14).

The URL's host is resolved at each try and every address it resolves to is judged; one refused address refuses
the try, and the try then connects to an address judged here, never resolving again (a name that answers a
public address to the check and a private one to the connection — DNS rebinding — gets nowhere).
Refused unless allowed: loopback, private (RFC 1918, unique-local), link-local (cloud metadata endpoints live
there: 169.254.169.254), shared address space (100.64/10, where some clouds put theirs), multicast, reserved
and unspecified addresses: everything Python's `ipaddress` does not call global.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """The host's addresses (in the resolver's order, each once); OSError when it resolves to none."""
    seen: dict[str, None] = {}
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        seen.setdefault(sockaddr[0].split("%", 1)[0])
    return list(seen)


class AddressPolicy:
    """`allow_networks`: CIDRs the operator trusts beyond the public internet (e.g. "10.0.0.0/8" for an
    in-cluster receiver, "127.0.0.0/8" in tests); ValueError names a malformed one."""

    def __init__(self, allow_networks: Sequence[str] = ()):
        self.allowed = [ipaddress.ip_network(cidr, strict=False) for cidr in allow_networks]

    def refusal(self, address: str) -> str | None:
        """None when `address` may be called; else why not."""
        ip: Address = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return None
        if ip.is_global and not ip.is_multicast:
            return None
        return f"{address} is {_kind(ip)}"


def _kind(ip: Address) -> str:
    # The most telling name first: Python counts 0.0.0.0/8 and 240.0.0.0/4 as private too.
    for test, name in ((ip.is_loopback, "a loopback"), (ip.is_unspecified, "an unspecified"),
                       (ip.is_link_local, "a link-local (metadata)"), (ip.is_multicast, "a multicast"),
                       (ip.is_reserved, "a reserved"), (ip.is_private, "a private")):
        if test:
            return name + " address"
    return "not a public address"
