"""One HTTP helper for every gateway: bounded timeouts, error mapping, secret masking."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import requests

MASK = "********"


def mask_secrets(value: Any, secrets: Iterable[str]) -> Any:
    """A deep copy of `value` with every secret string replaced, for logs and records."""
    # Longest first: a secret inside a longer one must not leave the rest of that one showing.
    secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, Mapping):
        return {k: mask_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v, secrets) for v in value]
    return value


class HttpClient:
    """A requests session with the timeouts and error mapping every gateway needs."""

    def __init__(self, base: str, *, timeout: tuple[float, float],
                 error_class: Callable[..., Exception]):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.error_class = error_class
        self.session = requests.Session()

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                data: bytes | str | Mapping[str, Any] | None = None,
                json: Any = None, params: Mapping[str, Any] | None = None) -> requests.Response:
        url = self.base + path
        try:
            return self.session.request(method, url, headers=headers, data=data, json=json,
                                        params=params, timeout=self.timeout)
        except requests.Timeout as exc:
            raise self.error_class("The payment gateway did not answer in time.",
                                   code="timeout", retryable=True) from exc
        except requests.ConnectionError as exc:
            raise self.error_class("The payment gateway could not be reached.",
                                   code="unreachable", retryable=True) from exc
