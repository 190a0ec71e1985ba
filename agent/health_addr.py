"""`runner.health_addr` / `--health-addr`: host:port, checked when the config is read (the
server itself, agent/health.py, is loaded only by a runner that serves one)."""

import ipaddress
import re

_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?")


class HealthAddressError(ValueError):
    """Not host:port; the message says what is wrong with it."""


def parse_health_addr(value: str) -> tuple[str, int]:
    """`127.0.0.1:9102`, `[::1]:9102` or `localhost:9102` -> (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise HealthAddressError(f"must be host:port, like 127.0.0.1:9102 or [::1]:9102, "
                                 f"got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise HealthAddressError(f"{host} is not an IPv6 address (in {value!r})") from None
    elif ":" in host:
        raise HealthAddressError(f"an IPv6 address goes in brackets, like [::1]:9102, "
                                 f"got {value!r}")
    elif not _HOST_NAME.fullmatch(host):
        raise HealthAddressError(f"{host!r} is not a host name or address (in {value!r})")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise HealthAddressError(f"the port must be 1-65535, got {port_text!r} (in {value!r})")
    return host, int(port_text)
