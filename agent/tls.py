"""The runner's TLS to the hub: which certificates it trusts, and warnings about weak set-ups."""

import ipaddress
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from agent.config import RunnerConfig, RunnerConfigError

log = structlog.get_logger("agent.tls")


def client_ssl_context(config: RunnerConfig) -> ssl.SSLContext:
    """The context for HTTPS and WSS to the hub: system trust store, a private CA, or no checks.

    The only way to turn verification off is here, and it logs `runner.tls.unverified` every
    time, so an unverified runner can never go unnoticed in its logs.
    """
    section = config.runner
    if section.skip_tls_verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # must be off before verify_mode can be CERT_NONE
        context.verify_mode = ssl.CERT_NONE
        log.warning("runner.tls.unverified", web_host=config.web_host,
                    message="runner.skip_tls_verify is true: the hub's certificate is not "
                            "checked, so anyone on the path can pose as the hub and receive "
                            "this runner's token and its tasks' secrets")
    elif section.server_ca_cert_file:
        # Only this bundle is trusted (not the system store): the hub is pinned to its own CA.
        context = _trusting(section.server_ca_cert_file)
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _trusting(name: str) -> ssl.SSLContext:
    path = Path(name).expanduser()
    try:
        return ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:  # before OSError, which it subclasses
        raise RunnerConfigError(f"runner.server_ca_cert_file {path} holds no usable PEM "
                                f"CA certificate ({exc})") from None
    except OSError as exc:
        raise RunnerConfigError(f"cannot read runner.server_ca_cert_file {path}: "
                                f"{exc.strerror or exc}") from None


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: traffic that never leaves this machine."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def warn_if_plaintext(config: RunnerConfig) -> bool:
    """Log `runner.tls.plaintext` (and return True) for http:// to a host off this machine."""
    parts = urlsplit(config.web_host)
    if parts.scheme != "http" or is_loopback(parts.hostname or ""):
        return False
    log.warning("runner.tls.plaintext", web_host=config.web_host,
                message="web_host is plain http:// to another machine: this runner's token "
                        "and its tasks' secrets will cross the network in clear text; use an "
                        "https:// hub (tls.enabled on the hub)")
    return True
