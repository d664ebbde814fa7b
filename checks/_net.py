"""Network address helpers shared by checks (one answer for one address everywhere)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache


@lru_cache(maxsize=1024)  # guests repeat a handful of listen addresses; parsing one costs ~5 µs
def loopback(address: str) -> bool:
    """Whether `address` only reaches this host: 127.0.0.0/8, ::1, their IPv4-mapped forms
    (::ffff:127.0.0.1), with or without [brackets] or a %zone, and the names localhost/localhost6.
    Any other host name may resolve to anything: not loopback."""
    address = address.strip()
    if address in ("localhost", "localhost6", "localhost.localdomain"):
        return True
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
