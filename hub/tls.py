"""The hub's TLS: the server SSL context built from the `tls` config block, checked at start."""

import ssl
from pathlib import Path

from hub.config import ConfigError, TlsConfig


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The context to serve HTTPS/WSS with, or None when TLS is off.

    Raises ConfigError naming the key and the file when a file is unset, unreadable or not a
    usable certificate/key, so the hub stops at start instead of listening without TLS.
    """
    if not tls.enabled:
        return None
    for key, name in (("tls.cert_file", tls.cert_file), ("tls.key_file", tls.key_file)):
        if not name:
            raise ConfigError(f"config key `{key}`: must name a PEM file when tls.enabled "
                              f"is true")
        try:
            # Read it ourselves first: ssl's own errors do not say which file was the problem.
            Path(name).read_bytes()
        except OSError as exc:
            raise ConfigError(f"config key `{key}`: cannot read {name}: "
                              f"{exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # A password callback that gives nothing: an encrypted key must fail here rather than
        # make OpenSSL prompt on a terminal that a service does not have.
        context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"config keys `tls.cert_file`/`tls.key_file`: {tls.cert_file} and "
                          f"{tls.key_file} are not a PEM certificate and its unencrypted "
                          f"private key ({exc})") from None
    return context
