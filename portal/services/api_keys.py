"""A lab's API keys: `lpk_<12 hex>_<secret>`, shown once, stored as a SHA-256 digest.

The visible part (`ApiKey.prefix`, e.g. `lpk_3f9a1c2b4d5e`) names the key in lists and finds its
row; the secret after it is 256 random bits. A plain SHA-256 suffices: a slow password hash
only helps against guessing low-entropy secrets, and nobody can guess 2^256 of them, while an
API request should not pay Argon2's 64 MiB and tenths of a second. No salt is needed either,
since every key is random and unique.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, exists, or_, select, update
from sqlalchemy.orm import Session, contains_eager
from sqlalchemy.orm.attributes import set_committed_value

from ..models import ApiKey, Lab, PaymentGatewayKeys, utcnow
from .audit import audit

KEY_FORMAT = re.compile(r"(lpk_[0-9a-f]{12})_([A-Za-z0-9_-]{43})")
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class NewApiKey:
    api_key: ApiKey
    key: str  # the whole key: shown once, never stored


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, lab_id: int, name: str, *, actor_id: int | None,
                   ip: str | None, via: str = "web") -> NewApiKey:
    prefix = "lpk_" + secrets.token_hex(6)
    while session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is not None:
        prefix = "lpk_" + secrets.token_hex(6)  # 48 bits: a clash is rare, never reused
    key = f"{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(lab_id=lab_id, name=name.strip(), prefix=prefix, key_hash=hash_key(key),
                 created_by_id=actor_id)
    session.add(row)
    session.flush()
    audit(session, lab_id=lab_id, user_id=actor_id, action="api_key.create",
          object_type="api_key", object_id=row.id, ip=ip, name=row.name, prefix=prefix,
          via=via)
    return NewApiKey(row, key)


def list_api_keys(session: Session, lab_id: int) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.lab_id == lab_id)
                                .order_by(ApiKey.revoked_at.is_not(None), ApiKey.id.desc())))


def revoke_api_key(session: Session, lab_id: int, key_id: int, *, actor_id: int | None,
                   ip: str | None) -> ApiKey | None:
    """None when the lab has no such key; revoking twice changes nothing."""
    row = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.lab_id == lab_id))
    if row is None or row.revoked_at is not None:
        return row
    row.revoked_at = utcnow()
    audit(session, lab_id=lab_id, user_id=actor_id, action="api_key.revoke",
          object_type="api_key", object_id=row.id, ip=ip, name=row.name, prefix=row.prefix)
    return row


# Built once. The key's lab, and whether its default gateway is set up, come in the same
# statement: every API request needs the lab, and creating a link needs the gateway.
_BY_PREFIX = (select(ApiKey).join(ApiKey.lab).where(ApiKey.prefix == bindparam("prefix"))
              .options(contains_eager(ApiKey.lab).with_expression(
                  Lab.default_gateway_ready, exists().where(
                      PaymentGatewayKeys.lab_id == Lab.id,
                      PaymentGatewayKeys.gateway == Lab.default_gateway,
                      PaymentGatewayKeys.enabled.is_(True)))))


def find_api_key(session: Session, presented: str | None) -> ApiKey | None:
    """The live key the caller presented, with its lab loaded (`lab_id` is the tenant), or None.

    Reads only; `touch_api_key` records the use.
    """
    match = KEY_FORMAT.fullmatch(presented or "")
    if match is None:
        return None
    row = session.scalars(_BY_PREFIX, {"prefix": match[1]}).first()
    if row is None or not hmac.compare_digest(row.key_hash, hash_key(match[0])):
        return None
    if row.revoked_at is not None:
        return None
    return row


def touch_api_key(session: Session, row: ApiKey) -> bool:
    """Records `last_used_at` at most once a minute; True when it wrote (the caller commits)."""
    now = utcnow()
    if row.last_used_at is not None and row.last_used_at > now - TOUCH_EVERY:
        return False
    # Conditional, so concurrent requests in the same minute write the row once.
    session.execute(update(ApiKey).where(
        ApiKey.id == row.id, or_(ApiKey.last_used_at.is_(None),
                                 ApiKey.last_used_at <= now - TOUCH_EVERY))
        .values(last_used_at=now).execution_options(synchronize_session=False))
    set_committed_value(row, "last_used_at", now)
    return True


def authenticate_api_key(session: Session, presented: str | None) -> ApiKey | None:
    """The live key the caller presented (its `lab_id` is the tenant), or None.

    Records `last_used_at` at most once a minute; the caller commits, even on a read-only
    request, for that to stick.
    """
    row = find_api_key(session, presented)
    if row is not None:
        touch_api_key(session, row)
    return row
