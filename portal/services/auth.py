"""Staff passwords (Argon2id) and sign-in throttling per account and per address."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from urllib.parse import urlsplit

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import LoginThrottle, User, utcnow

log = logging.getLogger(__name__)

# Production hashes with argon2-cffi's RFC 9106 low-memory profile (Argon2id). The test suite
# sets PORTAL_ARGON2_PROFILE=cheap-for-tests: same salt and hash lengths, a fraction of the work.
ARGON2_PROFILES = {
    "rfc-9106-low-memory": profiles.RFC_9106_LOW_MEMORY,
    "cheap-for-tests": replace(profiles.RFC_9106_LOW_MEMORY, time_cost=1, memory_cost=8,
                               parallelism=1),
}


def password_hasher(environ: Mapping[str, str] = os.environ) -> PasswordHasher:
    name = environ.get("PORTAL_ARGON2_PROFILE", "rfc-9106-low-memory")
    if name not in ARGON2_PROFILES:
        raise RuntimeError(f"PORTAL_ARGON2_PROFILE must be one of {sorted(ARGON2_PROFILES)}")
    if name == "cheap-for-tests" and "pytest" not in sys.modules:
        log.warning("PORTAL_ARGON2_PROFILE=cheap-for-tests: passwords are hashed with test "
                    "parameters; never use it for real accounts")
    return PasswordHasher.from_parameters(ARGON2_PROFILES[name])


hasher = password_hasher()
_DUMMY_HASH = hasher.hash("a password nobody has")

MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    return hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class SignIn:
    user: User | None
    locked_minutes: int = 0


def _throttles(session: Session, keys: list[str]) -> list[LoginThrottle]:
    return list(session.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(keys))
                                .with_for_update()))


def authenticate(session: Session, email: str, password: str, ip: str | None, *,
                 max_failures: int, lock_minutes: int) -> SignIn:
    """The user, or None with the same answer whether the email or the password was wrong.

    After `max_failures` failures within the window, the account's email and the address are
    each locked for `lock_minutes`; the caller commits.
    """
    email = email.strip().lower()
    keys = [f"email:{email}"] + ([f"ip:{ip}"] if ip else [])
    now = utcnow()
    throttles = _throttles(session, keys)
    locked = [t.locked_until for t in throttles if t.locked_until and t.locked_until > now]
    if locked:
        minutes = int((max(locked) - now).total_seconds() // 60) + 1
        return SignIn(None, locked_minutes=minutes)

    user = session.scalar(select(User).where(User.email == email))
    # Verify against a dummy hash for unknown emails so timing does not tell them apart.
    ok = verify_password(user.password_hash if user else _DUMMY_HASH, password)
    if ok and user is not None and user.active:
        for t in throttles:
            if t.key.startswith("email:"):
                session.delete(t)
        user.last_login_at = now
        if hasher.check_needs_rehash(user.password_hash):
            user.password_hash = hasher.hash(password)
        return SignIn(user)

    window = timedelta(minutes=lock_minutes)
    by_key = {t.key: t for t in throttles}
    for key in keys:
        throttle = by_key.get(key)
        if throttle is None:
            throttle = LoginThrottle(key=key, failures=0, window_started_at=now)
            session.add(throttle)
        if throttle.window_started_at < now - window:
            throttle.failures = 0
            throttle.window_started_at = now
        throttle.failures += 1
        # An address is shared by a whole front desk behind one NAT: give it more room.
        limit = max_failures * (4 if key.startswith("ip:") else 1)
        if throttle.failures >= limit:
            throttle.locked_until = now + window
            throttle.failures = 0
            throttle.window_started_at = now
    return SignIn(None)


def safe_next_url(target: str | None) -> str | None:
    """Only same-site paths: no scheme, no host, no `//host` or backslash tricks."""
    if not target:
        return None
    target = target.strip()
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    if any(ord(c) < 32 for c in target):
        return None
    return target
