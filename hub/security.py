"""Passwords (scrypt) and bearer tokens (random, stored as SHA-256, compared in constant time),
and where a request carries them."""

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping

# The browser session's cookie: set at login, read by the auth middleware.
SESSION_COOKIE = "semaphore"

# scrypt cost: n=2**14, r=8 is OWASP's floor and takes ~30 ms here, fine for a login.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R,
                            p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    expected = _unb64(digest)
    actual = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r),
                            p=int(p), dklen=len(expected))
    return hmac.compare_digest(actual, expected)


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Tokens carry 256 random bits, so one SHA-256 is enough (no salt or stretching needed);
    the lookup by hash is an index seek, and the final equality is the database's.
    surrogatepass: a header's bytes that are not UTF-8 are a wrong token, not an error."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case, the
    token stripped, possibly empty); None when the request sends no Bearer header."""
    header = headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"),
                               b.encode("utf-8", "surrogatepass"))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
