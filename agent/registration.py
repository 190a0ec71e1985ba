"""Runner registration with the hub over plain HTTPS/HTTP (stdlib only: the runner is frozen)."""

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from agent.config import RunnerConfig
from agent.errors import RunnerError
from agent.tls import client_ssl_context


class RegistrationError(RunnerError):
    """The hub refused or could not be reached; the message says which and why."""


def _request(config: RunnerConfig, method: str, path: str, body: dict[str, Any] | None = None,
             token: str = "", timeout: float = 30.0) -> dict[str, Any]:
    url = config.api_url(path)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    # The same trust settings as the websocket (system store, server_ca_cert_file, or none).
    context = client_ssl_context(config) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = _error_text(exc.read())
        raise RegistrationError(f"{method} {url} failed: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise RegistrationError(
                f"the hub at {url} presented a TLS certificate this runner does not trust "
                f"({reason.verify_message}); if the hub's certificate comes from a private CA, "
                f"set runner.server_ca_cert_file to that CA's PEM file") from None
        raise RegistrationError(f"cannot reach the hub at {url}: {reason}") from None
    return json.loads(raw) if raw.strip() else {}


def _error_text(raw: bytes) -> str:
    try:
        return json.loads(raw).get("error", raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace").strip() or "no details"


def register(config: RunnerConfig, public_key: str = "") -> tuple[str, str]:
    """Exchange the registration token for this runner's own token; that and the hub's
    release key ("" from a hub that has none)."""
    if not config.runner.registration_token:
        raise RegistrationError("runner.registration_token is empty: set it in the config "
                                "(or with `semaphore runner setup`) before registering")
    answer = _request(config, "POST", "/api/internal/runners", {
        "registration_token": config.runner.registration_token,
        "max_parallel_tasks": config.runner.max_parallel_tasks,
        "webhook": config.runner.webhook,
        "public_key": public_key,
        "name": config.display_name,
        "tags": config.runner.tags,
    })
    token = answer.get("token")
    if not isinstance(token, str) or not token:
        raise RegistrationError("the hub's answer has no token")
    release_key = answer.get("release_key", "")
    return token, release_key if isinstance(release_key, str) else ""


def unregister(config: RunnerConfig, token: str) -> None:
    """Delete this runner on the hub (authenticated by its own token)."""
    _request(config, "DELETE", "/api/internal/runners", token=token)
