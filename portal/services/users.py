"""A lab's users: one-time passwords and invite links, roles, deactivation, the last admin.

One-time passwords need no extra column: the Argon2 hash of a one-time password is made with a
salt that carries an HMAC (keyed with the app's secret key) of the user's id, so "must change
the password" is read from `password_hash` itself on every request. Setting any password
through `hash_password` draws a random salt, which ends the mark. `authenticate` keeps the mark
too: it only rehashes when the Argon2 parameters differ, and these hashes use the hasher's own.

Invite links are itsdangerous tokens holding the user's id and a fingerprint of the current
password hash: setting a password changes the hash, so a link works once; it expires after
`INVITE_MAX_AGE`. A new password, a reset, a deactivation or a reactivation ends every session
of the user (`staff_sessions.revoke_all`); sessions also carry the fingerprint (see
`portal/auth/sessions.py`), so a password hash changed any other way ends them too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2.low_level import hash_secret
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..models import Lab, Role, User, utcnow
from . import staff_sessions
from .audit import audit
from .auth import hash_password, hasher, verify_password

INVITE_SALT = "portal.user-invite"
INVITE_MAX_AGE = 72 * 3600
OTP_SALT = b"portal.one-time-password"
OTP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud or copied by hand


class UserError(Exception):
    """A change refused, with the reason in words for the admin."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class LastAdminError(UserError):
    pass


@dataclass(frozen=True)
class Access:
    """How a new or reset user gets in: shown to the admin once, never stored in clear."""

    user: User
    password: str | None = None
    invite_token: str | None = None


def list_users(session: Session, lab_id: int) -> list[User]:
    return list(session.scalars(select(User).where(User.lab_id == lab_id)
                                .order_by(User.active.desc(), User.email)))


def get_user(session: Session, lab_id: int, user_id: int) -> User | None:
    return session.scalar(select(User).where(User.id == user_id, User.lab_id == lab_id)
                          .execution_options(populate_existing=True))


# --- one-time passwords -------------------------------------------------------------------

def new_one_time_password() -> str:
    """Four groups of four (about 79 random bits), e.g. `k7dm-2xqa-p9rt-fw3h`."""
    chars = "".join(secrets.choice(OTP_ALPHABET) for _ in range(16))
    return "-".join(chars[i:i + 4] for i in range(0, 16, 4))


def _marked_salt(secret_key: str, user_id: int, nonce: bytes) -> bytes:
    mac = hmac.new(secret_key.encode(), OTP_SALT + b":%d:" % user_id + nonce, hashlib.sha256)
    return nonce + mac.digest()[:hasher.salt_len - len(nonce)]


def hash_one_time_password(secret_key: str, user_id: int, password: str) -> str:
    """An ordinary Argon2id hash whose salt marks it as a one-time password of this user."""
    salt = _marked_salt(secret_key, user_id, secrets.token_bytes(hasher.salt_len // 2))
    return hash_secret(password.encode(), salt, time_cost=hasher.time_cost,
                       memory_cost=hasher.memory_cost, parallelism=hasher.parallelism,
                       hash_len=hasher.hash_len, type=hasher.type).decode()


def must_change_password(secret_key: str, user: User) -> bool:
    parts = (user.password_hash or "").split("$")
    if len(parts) != 6 or not parts[1].startswith("argon2"):
        return False
    try:
        salt = base64.b64decode(parts[4] + "=" * (-len(parts[4]) % 4))
    except ValueError:
        return False
    if len(salt) != hasher.salt_len:
        return False
    nonce = salt[:hasher.salt_len // 2]
    return hmac.compare_digest(salt, _marked_salt(secret_key, user.id, nonce))


# --- invite links -------------------------------------------------------------------------

def password_fingerprint(password_hash: str) -> str:
    """Changes whenever the password does; safe to show (tokens and cookies are not secret)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=INVITE_SALT)


def invite_token(secret_key: str, user: User) -> str:
    payload = {"u": user.id, "p": password_fingerprint(user.password_hash)}
    return _serializer(secret_key).dumps(payload)


def user_from_invite(session: Session, secret_key: str, token: str,
                     max_age: int = INVITE_MAX_AGE) -> User | None:
    """The invited user, or None for a forged, expired or already used link."""
    try:
        data = _serializer(secret_key).loads(token, max_age=max_age)
    except BadSignature:  # SignatureExpired is one too
        return None
    if not isinstance(data, dict) or not isinstance(data.get("u"), int):
        return None
    user = session.get(User, data["u"])
    if user is None or not user.active:
        return None
    if not hmac.compare_digest(password_fingerprint(user.password_hash), str(data.get("p"))):
        return None
    return user


def _issue_access(session: Session, secret_key: str, user: User, how: str) -> Access:
    """Replaces the password: a new one-time password, or an unusable one and an invite."""
    staff_sessions.revoke_all(session, user.id, utcnow())
    if how == "password":
        password = new_one_time_password()
        user.password_hash = hash_one_time_password(secret_key, user.id, password)
        return Access(user, password=password)
    if how == "invite":
        user.password_hash = hash_password(secrets.token_urlsafe(32))  # nobody knows it
        return Access(user, invite_token=invite_token(secret_key, user))
    raise ValueError(f"unknown way in: {how!r}")


# --- changes by an admin ------------------------------------------------------------------

def create_user(session: Session, secret_key: str, lab_id: int, *, email: str, name: str,
                role: Role, how: str, actor_id: int | None, ip: str | None) -> Access:
    email = email.strip().lower()
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise UserError("A user with this email exists already.", field="email")
    user = User(lab_id=lab_id, email=email, name=name.strip(), role=role,
                password_hash="!", active=True)  # nosec B106  # "!" matches no password
    session.add(user)
    session.flush()  # the id goes into the one-time password's mark and the invite
    access = _issue_access(session, secret_key, user, how)
    audit(session, lab_id=lab_id, user_id=actor_id, action="user.create", object_type="user",
          object_id=user.id, ip=ip, email=email, role=role.value, access=how)
    return access


def reset_access(session: Session, secret_key: str, lab_id: int, user_id: int, *, how: str,
                 actor_id: int | None, ip: str | None) -> Access | None:
    """A new one-time password or invite; the old password and earlier invites stop working."""
    user = get_user(session, lab_id, user_id)
    if user is None:
        return None
    if user.id == actor_id:
        raise UserError("To change your own password, use “Change password”.")
    if not user.active:
        raise UserError("Reactivate the account first.")
    access = _issue_access(session, secret_key, user, how)
    audit(session, lab_id=lab_id, user_id=actor_id, action="user.reset_access",
          object_type="user", object_id=user.id, ip=ip, access=how)
    return access


def _lock_lab(session: Session, lab_id: int) -> None:
    """Serialises the lab's role and activity changes (SQLite: BEGIN IMMEDIATE already does)."""
    session.execute(select(Lab.id).where(Lab.id == lab_id).with_for_update())


def _refuse_if_last_admin(session: Session, user: User, message: str) -> None:
    if not (user.active and user.role == Role.ADMIN):
        return
    others = session.scalar(select(func.count()).select_from(User).where(
        User.lab_id == user.lab_id, User.role == Role.ADMIN, User.active.is_(True),
        User.id != user.id))
    if not others:
        raise LastAdminError(message)


def change_role(session: Session, lab_id: int, user_id: int, role: Role, *,
                actor_id: int | None, ip: str | None) -> User | None:
    _lock_lab(session, lab_id)
    user = get_user(session, lab_id, user_id)
    if user is None or user.role == role:
        return user
    if role != Role.ADMIN:
        _refuse_if_last_admin(session, user, f"{user.email} is the lab's only active admin. "
                                             "Make someone else an admin first.")
    old, user.role = user.role, role
    audit(session, lab_id=lab_id, user_id=actor_id, action="user.role_change",
          object_type="user", object_id=user.id, ip=ip, old=old.value, new=role.value)
    return user


def deactivate(session: Session, lab_id: int, user_id: int, *, actor_id: int | None,
               ip: str | None) -> User | None:
    """Signs them out everywhere: the password is replaced too, which ends every session."""
    unusable = hash_password(secrets.token_urlsafe(32))  # before the lock: Argon2 is slow
    _lock_lab(session, lab_id)
    user = get_user(session, lab_id, user_id)
    if user is None or not user.active:
        return user
    if user.id == actor_id:
        raise UserError("You cannot deactivate your own account. Ask another admin.")
    _refuse_if_last_admin(session, user, f"{user.email} is the lab's only active admin "
                                         "and cannot be deactivated.")
    user.active = False
    user.password_hash = unusable
    staff_sessions.revoke_all(session, user.id, utcnow())
    audit(session, lab_id=lab_id, user_id=actor_id, action="user.deactivate",
          object_type="user", object_id=user.id, ip=ip)
    return user


def sign_out_everywhere(session: Session, lab_id: int, user_id: int, *, actor_id: int | None,
                        ip: str | None) -> int | None:
    """An admin ends every session of another user of the lab; None if there is no such user."""
    user = get_user(session, lab_id, user_id)
    if user is None:
        return None
    if user.id == actor_id:
        raise UserError("To sign yourself out elsewhere, use “Your account”.")
    return staff_sessions.revoke_for_user(session, user, actor_id=actor_id, ip=ip, now=utcnow(),
                                          scope="admin")


def reactivate(session: Session, secret_key: str, lab_id: int, user_id: int, *, how: str,
               actor_id: int | None, ip: str | None) -> Access | None:
    """Back in, through a new one-time password or invite: old sessions stay ended."""
    user = get_user(session, lab_id, user_id)
    if user is None:
        return None
    if user.active:
        raise UserError(f"{user.email} is active already.")
    user.active = True
    access = _issue_access(session, secret_key, user, how)
    audit(session, lab_id=lab_id, user_id=actor_id, action="user.reactivate",
          object_type="user", object_id=user.id, ip=ip, access=how)
    return access


# --- the user's own password --------------------------------------------------------------

def set_password(session: Session, user: User, password: str, *, reason: str,
                 ip: str | None) -> None:
    """Raises ValueError for a password that is too short, or the same as the current one."""
    if verify_password(user.password_hash, password):
        raise ValueError("Choose a new password, not the one you signed in with.")
    user.password_hash = hash_password(password)
    staff_sessions.revoke_all(session, user.id, utcnow())  # the caller starts a new one here
    audit(session, lab_id=user.lab_id, user_id=user.id, action="user.password_set",
          object_type="user", object_id=user.id, ip=ip, reason=reason)
