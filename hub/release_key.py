"""The hub's release key: an Ed25519 key pair that signs the runner builds it serves.

Made on first use (hub start or `semaphore runner-binary add`), mode 0600; its public half
goes to every runner at registration, and a runner applies an update only if its signature
verifies with that key (docs/security.md says what it protects against and what not).
"""

import base64
import os
from pathlib import Path

from nacl.signing import SigningKey

from hub.config import ConfigError, HubConfig


def release_key_path(config: HubConfig) -> Path:
    """`release_key_file`, or `runner-release.key` beside the database."""
    if config.release_key_file:
        return Path(config.release_key_file).expanduser()
    return Path(config.database_path).expanduser().resolve().parent / "runner-release.key"


def load_release_key(config: HubConfig) -> SigningKey:
    """The signing key, made (0600, O_EXCL: two processes never make two) if it is missing."""
    path = release_key_path(config)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    except OSError as exc:
        raise ConfigError(f"`release_key_file`: cannot create {path}: {exc.strerror}") from None
    key = SigningKey.generate()
    with os.fdopen(fd, "wb") as file:
        file.write(base64.b64encode(bytes(key)) + b"\n")
    return key


def _read(path: Path) -> SigningKey:
    try:
        raw = path.read_bytes().strip()
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"`release_key_file`: {path} may be read by others (mode "
                              f"{path.stat().st_mode & 0o777:o}); chmod 600 it")
        if not raw:
            # Another process made the file a moment ago and writes it now.
            raise ValueError("empty")
        return SigningKey(base64.b64decode(raw, validate=True))
    except OSError as exc:
        raise ConfigError(f"`release_key_file`: cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"`release_key_file`: {path} is not a base64 Ed25519 key") from None


def public_key_text(key: SigningKey) -> str:
    return base64.b64encode(bytes(key.verify_key)).decode()
