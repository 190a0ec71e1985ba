"""The runner's key pair: made at `runner register`, the private half kept in a 0600 file;
the hub seals each task's secrets to the public half."""

import base64
from pathlib import Path

import msgspec
import nacl.exceptions
import nacl.public

from agent.config import write_private_file
from agent.errors import RunnerError
from protocol.frames import TaskSecrets


class RunnerKeyError(RunnerError):
    """The runner's private key cannot be read or does not open a task's secrets."""


def create_key_pair(path: Path) -> str:
    """Write a new private key to `path` (mode 0600) and return the public key, base64."""
    private = nacl.public.PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(path, base64.b64encode(bytes(private)).decode() + "\n")
    return base64.b64encode(bytes(private.public_key)).decode()


def load_private_key(path: Path) -> nacl.public.PrivateKey:
    try:
        raw = base64.b64decode(path.read_text().strip(), validate=True)
        return nacl.public.PrivateKey(raw)
    except OSError as exc:
        raise RunnerKeyError(
            f"cannot read runner.private_key_file {path}: {exc.strerror}") from None
    except (ValueError, nacl.exceptions.CryptoError):
        raise RunnerKeyError(
            f"runner.private_key_file {path} does not hold a private key") from None


class SecretOpener:
    """Opens the sealed secrets of an assign with the runner's private key."""

    def __init__(self, private_key: nacl.public.PrivateKey | None):
        self._box = nacl.public.SealedBox(private_key) if private_key is not None else None

    def open(self, sealed: str) -> TaskSecrets:
        if self._box is None:
            raise RunnerKeyError("this runner has no private key to open the task's secrets "
                            "(run `semaphore runner register` to make one)")
        try:
            return msgspec.json.decode(self._box.decrypt(base64.b64decode(sealed)),
                                       type=TaskSecrets)
        except (ValueError, msgspec.DecodeError, nacl.exceptions.CryptoError):
            raise RunnerKeyError(
                "the task's secrets were not sealed to this runner's key") from None
