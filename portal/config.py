"""Settings from the environment, in one place (DESIGN §6)."""

from __future__ import annotations

import math
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet

DEFAULT_BASE_URL = "http://127.0.0.1:5000"
SMS_SETTINGS = ("PORTAL_TWILIO_ACCOUNT_SID", "PORTAL_TWILIO_AUTH_TOKEN", "PORTAL_TWILIO_FROM",
                "PORTAL_SMS_HTTP_URL", "PORTAL_SMS_HTTP_API_KEY", "PORTAL_SMS_HTTP_AUTH_HEADER",
                "PORTAL_WHATSAPP_ACCESS_TOKEN", "PORTAL_WHATSAPP_PHONE_NUMBER_ID",
                "PORTAL_WHATSAPP_API_VERSION")


def _read_or_create(path: Path, make) -> str:
    """A secret generated once into the instance folder, readable only by its owner."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
    return value


def _positive_number(environ, name: str, default: str) -> float:
    value = float(environ.get(name, default))
    if not (math.isfinite(value) and 0 < value <= 10_000):
        raise ValueError(f"{name} must be above 0 and at most 10000, not {value}")
    return value


def _proxy_hops(environ) -> int:
    raw = environ.get("PORTAL_TRUSTED_PROXIES", "0").strip() or "0"
    if not raw.isdigit() or int(raw) > 5:
        raise ValueError(f"PORTAL_TRUSTED_PROXIES must be the number of proxies in front of the "
                         f"portal (0 to 5), not {raw!r}")
    return int(raw)


def load_settings(instance_path: str, environ=os.environ) -> dict:
    instance = Path(instance_path)
    base_url = environ.get("PORTAL_BASE_URL", DEFAULT_BASE_URL).rstrip("/")
    database_url = environ.get("PORTAL_DATABASE_URL") or f"sqlite:///{instance / 'portal.db'}"
    secret_key = environ.get("PORTAL_SECRET_KEY") or _read_or_create(
        instance / "secret_key", lambda: secrets.token_urlsafe(48))
    encryption_keys = environ.get("PORTAL_ENCRYPTION_KEYS") or _read_or_create(
        instance / "encryption_keys", lambda: Fernet.generate_key().decode())
    session_max_hours = _positive_number(environ, "PORTAL_SESSION_MAX_HOURS", "12")
    settings = {
        "SECRET_KEY": secret_key,
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_ENCRYPTION_KEYS": [k.strip() for k in encryption_keys.split(",") if k.strip()],
        "PORTAL_BASE_URL": base_url,
        "PORTAL_SMTP_URL": environ.get("PORTAL_SMTP_URL"),
        "PORTAL_MAIL_FROM": environ.get("PORTAL_MAIL_FROM", "payments@localhost"),
        "PORTAL_SMS_BACKEND": environ.get("PORTAL_SMS_BACKEND", "console"),
        **{name: environ.get(name) for name in SMS_SETTINGS},
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": base_url.startswith("https://"),
        "SESSION_COOKIE_NAME": "portal_session",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": base_url.startswith("https://"),
        "PERMANENT_SESSION_LIFETIME": int(session_max_hours * 3600),
        # Staff sessions end on the server after this long without a request, and after
        # PORTAL_SESSION_MAX_HOURS whatever happens (portal/services/staff_sessions.py).
        "PORTAL_SESSION_IDLE_MINUTES": _positive_number(environ, "PORTAL_SESSION_IDLE_MINUTES",
                                                        "30"),
        "PORTAL_SESSION_MAX_HOURS": session_max_hours,
        "WTF_CSRF_TIME_LIMIT": None,  # tied to the session instead; a long form stays valid
        # Flask-WTF's extra Referer check on HTTPS would refuse every form: our pages send
        # Referrer-Policy: no-referrer (pay URLs carry tokens). The token and SameSite guard them.
        "WTF_CSRF_SSL_STRICT": False,
        # How many proxies (nginx, a load balancer) stand in front: their X-Forwarded-For,
        # -Proto and -Host are believed, so remote_addr is the client's. 0: headers ignored.
        "PORTAL_TRUSTED_PROXIES": _proxy_hops(environ),
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        "PORTAL_API_RATE_LIMIT": int(environ.get("PORTAL_API_RATE_LIMIT", "120")),
        # Shared by every process and node when set (portal/ratelimits.py); else per process.
        "PORTAL_REDIS_URL": environ.get("PORTAL_REDIS_URL") or None,
        # GET /metrics needs `Authorization: Bearer <this>`; without it /metrics is a 404.
        "PORTAL_METRICS_TOKEN": environ.get("PORTAL_METRICS_TOKEN") or None,
        "PORTAL_LOGIN_RATE_LIMIT": int(environ.get("PORTAL_LOGIN_RATE_LIMIT", "30")),
        "PORTAL_PATIENT_RATE_LIMIT": int(environ.get("PORTAL_PATIENT_RATE_LIMIT", "60")),
        "PORTAL_LOGIN_MAX_FAILURES": int(environ.get("PORTAL_LOGIN_MAX_FAILURES", "5")),
        "PORTAL_LOGIN_LOCK_MINUTES": int(environ.get("PORTAL_LOGIN_LOCK_MINUTES", "15")),
        # The app's own access line per request (tokens redacted); off where a proxy in
        # front logs requests already.
        "PORTAL_ACCESS_LOG": environ.get("PORTAL_ACCESS_LOG", "on").lower()
        not in ("0", "off", "false", "no"),
        # How long a worker holds a job before another may take it over (it may have died).
        "PORTAL_JOB_LEASE_SECONDS": float(environ.get("PORTAL_JOB_LEASE_SECONDS", "60")),
        # Outgoing webhooks may reach private and loopback addresses (and http) for these labs:
        # "all", or slugs separated by commas. Off by default (portal/services/outhooks.py).
        "PORTAL_WEBHOOK_TEST_MODE": environ.get("PORTAL_WEBHOOK_TEST_MODE", ""),
        "PORTAL_WEBHOOK_CONNECT_TIMEOUT": _positive_number(
            environ, "PORTAL_WEBHOOK_CONNECT_TIMEOUT", "5"),
        "PORTAL_WEBHOOK_READ_TIMEOUT": _positive_number(environ, "PORTAL_WEBHOOK_READ_TIMEOUT",
                                                        "10"),
    }
    for key, value in environ.items():
        if key.startswith("PORTAL_") and key.endswith("_API_BASE"):
            settings[key] = value.rstrip("/")
    return settings


def gateway_api_base(config, gateway: str) -> str | None:
    """`PORTAL_<GATEWAY>_API_BASE`, or for the sandbox the portal's own /sandbox."""
    override = config.get(f"PORTAL_{gateway.upper()}_API_BASE")
    if override:
        return override
    if gateway == "sandbox":
        return config["PORTAL_BASE_URL"] + "/sandbox"
    return None
