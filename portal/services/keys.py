"""Gateway credentials, encrypted at rest under MultiFernet, and gateways built from them."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from gateways import GATEWAYS, Gateway
from gateways.base import GatewayError

from .. import logmask
from ..config import gateway_api_base
from ..models import GatewayMode, Lab, PaymentGatewayKeys


class CredentialsError(ValueError):
    """Credentials that do not fit a gateway's declared fields; `field` names the one at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def cipher(keys: list[str]) -> MultiFernet:
    if not keys:
        raise RuntimeError("PORTAL_ENCRYPTION_KEYS is empty")
    return _cipher(tuple(keys))


@functools.lru_cache(maxsize=8)
def _cipher(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in keys])


def encrypt(keys: list[str], credentials: Mapping[str, str]) -> bytes:
    return cipher(keys).encrypt(json.dumps(dict(credentials), sort_keys=True).encode())


def decrypt(keys: list[str], token: bytes) -> dict[str, str]:
    return dict(_decrypt(tuple(keys), bytes(token)))


@functools.lru_cache(maxsize=256)
def _decrypt(keys: tuple[str, ...], token: bytes) -> dict[str, str]:
    """Kept per process for the stored value (a webhook reads its lab's secret every time);
    a changed credential is a new token. Callers get copies."""
    try:
        credentials: dict[str, str] = json.loads(_cipher(keys).decrypt(token))
        return credentials
    except InvalidToken:
        raise RuntimeError("stored gateway keys cannot be decrypted with PORTAL_ENCRYPTION_KEYS"
                           ) from None


def validate_credentials(gateway: str, values: Mapping[str, str], *,
                         existing: Mapping[str, str] | None = None) -> dict[str, str]:
    """Checks fields against the gateway's declaration; blank secrets keep `existing` values."""
    cls = GATEWAYS.get(gateway)
    if cls is None:
        raise CredentialsError(f"unknown gateway {gateway!r}; known: {', '.join(GATEWAYS)}")
    known = {f.name: f for f in cls.credential_fields}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise CredentialsError(f"unknown field(s) for {gateway}: {', '.join(unknown)}")
    result: dict[str, str] = {}
    for name, spec in known.items():
        value = values.get(name)
        value = value.strip() if isinstance(value, str) else value
        if not value and existing and existing.get(name):
            value = existing[name]
        if value is not None and not isinstance(value, str):
            raise CredentialsError(f"{name} must be text", name)
        if not value:
            if spec.required:
                raise CredentialsError(f"{name} is required for {gateway}", name)
            continue
        if spec.choices and value not in spec.choices:
            raise CredentialsError(f"{name} must be one of {', '.join(spec.choices)}", name)
        result[name] = value
    return result


def stored_keys(session: Session, lab_id: int, gateway: str) -> PaymentGatewayKeys | None:
    return session.scalar(select(PaymentGatewayKeys).where(
        PaymentGatewayKeys.lab_id == lab_id, PaymentGatewayKeys.gateway == gateway))


def remember_secrets(gateway: str, credentials: Mapping[str, str]) -> None:
    """Tells the log masking about a lab's secret fields as soon as this process holds them."""
    cls = GATEWAYS.get(gateway)
    if cls is not None:
        logmask.remember(cls.secret_values(credentials))


def remember_stored_secrets(session: Session, encryption_keys: list[str]) -> int:
    """Every lab's stored secrets into the log masking (at start-up); returns how many sets."""
    count = 0
    for gateway, token in session.execute(select(PaymentGatewayKeys.gateway,
                                                 PaymentGatewayKeys.credentials_encrypted)):
        try:
            remember_secrets(gateway, decrypt(encryption_keys, token))
        except (RuntimeError, ValueError):
            continue  # unreadable under these keys: nothing here can use, or log, it either
        count += 1
    return count


def _decrypted(encryption_keys: list[str], row: PaymentGatewayKeys) -> dict[str, str]:
    credentials = decrypt(encryption_keys, row.credentials_encrypted)
    remember_secrets(row.gateway, credentials)
    return credentials


def load_credentials(session: Session, encryption_keys: list[str], lab_id: int,
                     gateway: str) -> dict[str, str] | None:
    row = stored_keys(session, lab_id, gateway)
    if row is None or not row.enabled:
        return None
    return _decrypted(encryption_keys, row)


def save_credentials(session: Session, encryption_keys: list[str], lab: Lab, gateway: str,
                     values: Mapping[str, str], *, mode: GatewayMode = GatewayMode.TEST,
                     make_default: bool = True, user_id: int | None = None) -> PaymentGatewayKeys:
    row = stored_keys(session, lab.id, gateway)
    existing = _decrypted(encryption_keys, row) if row else None
    credentials = validate_credentials(gateway, values, existing=existing)
    remember_secrets(gateway, credentials)
    if row is None:
        row = PaymentGatewayKeys(lab_id=lab.id, gateway=gateway)
        session.add(row)
    row.credentials_encrypted = encrypt(encryption_keys, credentials)
    row.mode = mode
    row.enabled = True
    row.updated_by_id = user_id
    if make_default:
        lab.default_gateway = gateway
    session.flush()
    return row


def rotate_all(session: Session, encryption_keys: list[str]) -> int:
    """Re-encrypts every stored credential under the newest key; returns how many."""
    fernet = cipher(encryption_keys)
    rows = session.scalars(select(PaymentGatewayKeys)).all()
    for row in rows:
        row.credentials_encrypted = fernet.rotate(row.credentials_encrypted)
    session.flush()
    return len(rows)


def is_configured(session: Session, lab_id: int, gateway: str) -> bool:
    row = stored_keys(session, lab_id, gateway)
    return row is not None and row.enabled


_ENABLED = select(PaymentGatewayKeys.gateway).where(
    PaymentGatewayKeys.lab_id == bindparam("lab_id"), PaymentGatewayKeys.enabled.is_(True))


def configured_gateways(session: Session, lab_id: int) -> set[str]:
    """The names of the gateways `is_configured` for the lab, in one query."""
    return {name for name in session.scalars(_ENABLED, {"lab_id": lab_id}) if name in GATEWAYS}


class StoredKeys(NamedTuple):
    """What `gateway_from_stored` needs of a lab's stored keys: STORED_COLUMNS, in order."""

    enabled: bool
    mode: GatewayMode
    credentials_encrypted: bytes


STORED_COLUMNS = (PaymentGatewayKeys.enabled, PaymentGatewayKeys.mode,
                  PaymentGatewayKeys.credentials_encrypted)
_STORED = select(*STORED_COLUMNS).where(PaymentGatewayKeys.lab_id == bindparam("lab_id"),
                                        PaymentGatewayKeys.gateway == bindparam("gateway"))


def configured_gateway(session: Session, config: Mapping[str, Any], lab_id: int,
                       gateway: str) -> Gateway:
    """The lab's gateway, ready to call; GatewayError when it is not set up."""
    row = session.execute(_STORED, {"lab_id": lab_id, "gateway": gateway}).first()
    return gateway_from_stored(config, gateway, None if row is None else StoredKeys(*row))


def gateway_from_stored(config: Mapping[str, Any], gateway: str,
                        row: StoredKeys | None) -> Gateway:
    """The gateway from its stored keys, read by the caller (None: never set up);
    GatewayError when it is not set up."""
    cls = GATEWAYS.get(gateway)
    if cls is None:
        raise GatewayError(f"Unknown gateway {gateway!r}.", code="not_configured")
    if row is None or not row.enabled:
        raise GatewayError(f"The lab has not set up {cls.display_name} yet.",
                           code="not_configured")
    credentials = decrypt(config["PORTAL_ENCRYPTION_KEYS"], row.credentials_encrypted)
    remember_secrets(gateway, credentials)
    api_base = gateway_api_base(config, gateway)
    if api_base is None and row.mode == GatewayMode.TEST and cls.sandbox_api_base:
        api_base = cls.sandbox_api_base
    return cls(credentials, api_base=api_base,
               webhook_url=f"{config['PORTAL_BASE_URL']}/payments/webhook/{gateway}")
