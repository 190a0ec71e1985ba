"""Secrets at rest (NaCl SecretBox under access_key_encryption) and in flight to a runner
(NaCl SealedBox to the runner's own public key)."""

import base64
import binascii

import msgspec
import nacl.exceptions
import nacl.public
import nacl.secret

from protocol.frames import TaskSecrets

PREFIX = "enc:v1:"


class SecretsUnavailable(Exception):
    """A secret was to be stored or read but the hub has no (or a wrong) encryption key."""


class SecretCipher:
    """Encrypts values stored in the database; a hub without a key stores no secrets."""

    def __init__(self, key_b64: str):
        self._box = nacl.secret.SecretBox(decode_key(key_b64)) if key_b64 else None

    @property
    def enabled(self) -> bool:
        return self._box is not None

    def encrypt(self, plaintext: str) -> str:
        if self._box is None:
            raise SecretsUnavailable(
                "secrets cannot be stored: set `access_key_encryption` in the hub config "
                "(base64 of 32 random bytes, e.g. `head -c32 /dev/urandom | base64`)")
        return PREFIX + base64.b64encode(self._box.encrypt(plaintext.encode())).decode()

    def decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            raise SecretsUnavailable("a stored secret is not in the encrypted format")
        if self._box is None:
            raise SecretsUnavailable("a stored secret cannot be read: `access_key_encryption`"
                                     " is not set in the hub config")
        try:
            return self._box.decrypt(base64.b64decode(stored[len(PREFIX):])).decode()
        except nacl.exceptions.CryptoError:
            raise SecretsUnavailable("a stored secret cannot be decrypted: "
                                     "`access_key_encryption` is not the key it was stored "
                                     "with") from None


def is_encrypted(stored: str) -> bool:
    """Whether a stored value is in SecretCipher's format (not clear text left by an older
    hub)."""
    return stored.startswith(PREFIX)


def decode_key(key_b64: str) -> bytes:
    """access_key_encryption -> 32 bytes; ValueError naming the problem otherwise."""
    try:
        key = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None
    if len(key) != nacl.secret.SecretBox.KEY_SIZE:
        raise ValueError(f"must decode to 32 bytes, got {len(key)}")
    return key


def seal_for_runner(public_key_b64: str, secrets: TaskSecrets) -> str:
    """A task's secrets sealed so only the holder of the runner's private key can open them."""
    public_key = nacl.public.PublicKey(base64.b64decode(public_key_b64))
    sealed = nacl.public.SealedBox(public_key).encrypt(msgspec.json.encode(secrets))
    return base64.b64encode(sealed).decode()


def valid_public_key(public_key_b64: str) -> bool:
    try:
        return len(base64.b64decode(public_key_b64, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False
