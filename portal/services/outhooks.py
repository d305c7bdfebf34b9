"""Outgoing webhooks: the lab's endpoints, the events written for them in the transaction of the
change, and their signed delivery by the worker (retried for three days, in order per link).

A body is `{"id": "evt_...", "type", "created": <unix seconds>, "data": <the link as
GET /payments/status/<id> shows it>}`, signed `Portal-Signature: t=<unix seconds>,v1=<hex
HMAC-SHA256 of "<t>.<body>">`, with one more `v1` per secret still valid after a rotation.

Server-side request forgery: a URL must be https (unless the portal runs on http, or the lab is in
webhook test mode), and every address its host resolves to must be public, checked when it is
registered and again at each delivery, where the request goes to the address that was checked
(DNS rebinding), with the Host header and TLS server name of the URL. Redirects are not followed.
Test mode is an operator's setting, `PORTAL_WEBHOOK_TEST_MODE`: `all`, or lab slugs separated by
commas; a lab admin cannot turn it on, since the guard protects the operator's network from them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import random
import re
import secrets
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import urllib3
from sqlalchemy import ColumnElement, event, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, SessionTransaction, object_session

from .. import logmask
from ..models import (
    DeliveryStatus,
    Job,
    Lab,
    OnlinePayment,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    utcnow,
)
from ..worker.queue import IN_CHUNK, new_job
from .api_objects import status_object
from .keys import decrypt, encrypt

EVENT_TYPES: tuple[str, ...] = (
    "link.created", "link.paid", "link.partially_paid", "link.expired", "link.cancelled",
    "payment.failed", "refund.succeeded", "refund.failed",
)
JOB_KIND = "webhook.deliver"
SIGNATURE_HEADER = "Portal-Signature"
RETRY_WINDOW = timedelta(days=3)
ROTATION_OVERLAP = timedelta(hours=24)
FIRST_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=6)
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
MAX_RESPONSE_READ = 4096  # bytes of the answer kept; the rest is never read
EXCERPT_CHARS = 300
MAX_URL_LENGTH = 2000
MAX_ENDPOINTS = 20
USER_AGENT = "LabPaymentPortal-Webhooks/1"

# Beside `not is_global`: ranges some Python versions still count as global.
BLOCKED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
    "240.0.0.0/4", "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "64:ff9b::/96",
    "64:ff9b:1::/48", "2002::/16",
))


class EndpointError(ValueError):
    """A URL or request refused, with a stable `code` for the API and a `field`."""

    def __init__(self, code: str, message: str, field: str = "url"):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Target:
    """Where a delivery goes: the checked addresses, and the name the request carries."""

    scheme: str
    host: str
    port: int
    path: str
    host_header: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    excerpt: str | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class NewEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


# --- test mode and the address guard -----------------------------------------------------------

def in_test_mode(config: Mapping[str, Any], lab: Lab) -> bool:
    setting = str(config.get("PORTAL_WEBHOOK_TEST_MODE") or "").strip()
    if setting.lower() == "all":
        return True
    return lab.slug in {s.strip() for s in setting.split(",") if s.strip()}


def forbidden_address(address: str) -> bool:
    """Loopback, private, CGNAT, ULA, link-local, multicast, unspecified or reserved."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (not ip.is_global or ip.is_multicast or ip.is_loopback or ip.is_private
            or ip.is_link_local or ip.is_reserved or ip.is_unspecified
            or any(ip in net for net in BLOCKED_NETWORKS if net.version == ip.version))


def resolve(host: str, port: int) -> tuple[str, ...]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise EndpointError("unresolvable_host",
                            f"The host {host} cannot be resolved ({exc}).") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise EndpointError("unresolvable_host", f"The host {host} has no address.")
    return addresses


CONTROL = re.compile(r"[\x00-\x20\x7f]")


def check_url(url: str, config: Mapping[str, Any], lab: Lab) -> Target:
    """The URL's target once its scheme and every resolved address pass; EndpointError if not."""
    if not isinstance(url, str) or not url.strip():
        raise EndpointError("invalid_url", "Enter the URL of your system's webhook endpoint.")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH or CONTROL.search(url):
        raise EndpointError("invalid_url", f"The URL must be at most {MAX_URL_LENGTH} "
                            "characters, without spaces.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EndpointError("invalid_url", "This is not a valid URL.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError("invalid_url", "The URL must start with https:// and name a host.")
    if parts.username is not None or parts.password is not None:
        raise EndpointError("invalid_url", "The URL must not carry a user name or password.")
    test_mode = in_test_mode(config, lab)
    dev = str(config.get("PORTAL_BASE_URL", "")).startswith("http://")
    if scheme != "https" and not (test_mode or dev):
        raise EndpointError("https_required", "Only https:// URLs are allowed.")
    try:  # an international name travels in its ASCII form (Host header, SNI)
        host = parts.hostname.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        raise EndpointError("invalid_url", "The host name is not valid.") from None
    if not host:
        raise EndpointError("invalid_url", "The URL must name a host.")
    port = port or (443 if scheme == "https" else 80)
    addresses = resolve(host, port)
    if not test_mode:
        bad = [a for a in addresses if forbidden_address(a)]
        if bad:
            raise EndpointError("forbidden_address", f"{host} points to {bad[0]}, a private, "
                                "loopback, link-local or reserved address: not allowed.")
    shown_host = f"[{host}]" if ":" in host else host
    default_port = port == (443 if scheme == "https" else 80)
    host_header = shown_host if default_port else f"{shown_host}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, host, port, path, host_header, addresses)


# --- signing -----------------------------------------------------------------------------------

def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature_header(signing_secrets: Sequence[str], body: bytes, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + body
    values = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in signing_secrets]
    return ",".join([f"t={timestamp}", *(f"v1={v}" for v in values)])


def _secret(encryption_keys: list[str], token: bytes) -> str:
    value = decrypt(encryption_keys, token)["secret"]
    logmask.remember([value])
    return value


def signing_secrets(encryption_keys: list[str], endpoint: WebhookEndpoint,
                    now: datetime) -> list[str]:
    """The current secret, then the previous one while its overlap lasts."""
    found = [_secret(encryption_keys, endpoint.secret_encrypted)]
    if (endpoint.previous_secret_encrypted is not None and endpoint.previous_secret_until
            and endpoint.previous_secret_until > now):
        found.append(_secret(encryption_keys, endpoint.previous_secret_encrypted))
    return found


# --- endpoints ---------------------------------------------------------------------------------

def clean_event_types(values: Iterable[Any] | None) -> list[str]:
    if values is None:
        return list(EVENT_TYPES)
    chosen = list(values)
    unknown = [str(v)[:50] for v in chosen if v not in EVENT_TYPES]
    if unknown:
        raise EndpointError("unknown_event_type", f"Unknown event type(s): {', '.join(unknown)}. "
                            f"Known: {', '.join(EVENT_TYPES)}.", field="events")
    if not chosen:
        raise EndpointError("no_event_types", "Choose at least one event.", field="events")
    return [t for t in EVENT_TYPES if t in chosen]


def list_endpoints(session: Session, lab_id: int) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.lab_id == lab_id, WebhookEndpoint.deleted_at.is_(None))
        .order_by(WebhookEndpoint.id)))


def get_endpoint(session: Session, lab_id: int, endpoint_id: int) -> WebhookEndpoint | None:
    """An endpoint of this lab only: another lab's id is simply not found."""
    return session.scalar(select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.lab_id == lab_id,
        WebhookEndpoint.deleted_at.is_(None)))


def create_endpoint(session: Session, config: Mapping[str, Any], lab: Lab, url: str,
                    event_types: Iterable[Any] | None = None, *, description: str = "",
                    user_id: int | None = None) -> NewEndpoint:
    types = clean_event_types(event_types)
    check_url(url, config, lab)
    if len(list_endpoints(session, lab.id)) >= MAX_ENDPOINTS:
        raise EndpointError("too_many_endpoints",
                            f"A lab can have at most {MAX_ENDPOINTS} endpoints.")
    secret = new_secret()
    logmask.remember([secret])
    endpoint = WebhookEndpoint(
        lab_id=lab.id, url=url.strip(), description=(description or "").strip()[:200],
        event_types=types, secret_encrypted=encrypt(config["PORTAL_ENCRYPTION_KEYS"],
                                                    {"secret": secret}),
        enabled=True, created_by_id=user_id)
    session.add(endpoint)
    forget_endpoints(session)
    session.flush()
    return NewEndpoint(endpoint, secret)


def rotate_secret(session: Session, config: Mapping[str, Any], endpoint: WebhookEndpoint, *,
                  now: datetime | None = None) -> str:
    """A new secret; the old one keeps signing (a second v1) for ROTATION_OVERLAP."""
    now = now or utcnow()
    secret = new_secret()
    logmask.remember([secret])
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_until = now + ROTATION_OVERLAP
    endpoint.secret_encrypted = encrypt(config["PORTAL_ENCRYPTION_KEYS"], {"secret": secret})
    session.flush()
    return secret


def delete_endpoint(session: Session, endpoint: WebhookEndpoint, *,
                    now: datetime | None = None) -> None:
    """Kept for its delivery log, but never shown or sent to again."""
    endpoint.deleted_at = now or utcnow()
    endpoint.enabled = False
    session.flush()


def rotate_encryption(session: Session, encryption_keys: list[str]) -> int:
    """Re-encrypts every endpoint secret under the newest key (`portal keys rotate`)."""
    from .keys import cipher

    fernet = cipher(encryption_keys)
    rows = session.scalars(select(WebhookEndpoint)).all()
    for row in rows:
        row.secret_encrypted = fernet.rotate(row.secret_encrypted)
        if row.previous_secret_encrypted is not None:
            row.previous_secret_encrypted = fernet.rotate(row.previous_secret_encrypted)
    session.flush()
    return len(rows)


def endpoint_object(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {"id": endpoint.id, "url": endpoint.url, "description": endpoint.description,
            "events": list(endpoint.event_types), "enabled": endpoint.enabled,
            "created_at": endpoint.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")}


# --- events: written in the transaction of the change ------------------------------------------

_KNOWN_ENDPOINTS = "portal_lab_has_endpoints"


def has_endpoints_column(lab_id: ColumnElement[int] | InstrumentedAttribute[int]
                         ) -> ColumnElement[bool]:
    """Whether the lab has an endpoint that may take events: read beside the lab in a query
    the caller makes anyway, then `remember_endpoints`, and `emit` asks nothing for a lab
    that has none (most labs)."""
    return select(WebhookEndpoint.id).where(
        WebhookEndpoint.lab_id == lab_id, WebhookEndpoint.enabled.is_(True),
        WebhookEndpoint.deleted_at.is_(None)).exists().label("has_endpoints")


def remember_endpoints(session: Session, lab_id: int, has_endpoints: bool) -> None:
    """Kept for the rest of the session's transaction only."""
    session.info.setdefault(_KNOWN_ENDPOINTS, {})[lab_id] = bool(has_endpoints)


def forget_endpoints(session: Session) -> None:
    session.info.pop(_KNOWN_ENDPOINTS, None)


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        forget_endpoints(session)


def emit(session: Session, link: OnlinePayment, event_type: str, *,
         now: datetime | None = None) -> WebhookEvent | None:
    """Records `event_type` for `link` and one delivery per endpoint that wants it, in the
    caller's transaction. Every creator and every state move of a link calls this."""
    events = emit_many(session, [link], event_type, now=now)
    return events[0] if events else None


def emit_many(session: Session, links: Sequence[OnlinePayment], event_type: str, *,
              now: datetime | None = None) -> list[WebhookEvent]:
    """`emit` for many links: the endpoints read once, events and deliveries added together,
    one look for earlier deliveries still going. Returns the events (none: no endpoint)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    known = session.info.get(_KNOWN_ENDPOINTS, {})
    links = [link for link in links if known.get(link.lab_id) is not False]
    if not links:
        return []
    endpoints: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in session.scalars(select(WebhookEndpoint).where(
            WebhookEndpoint.lab_id.in_({link.lab_id for link in links}),
            WebhookEndpoint.enabled.is_(True),
            WebhookEndpoint.deleted_at.is_(None)).order_by(WebhookEndpoint.id)):
        if event_type in endpoint.event_types:
            endpoints.setdefault(endpoint.lab_id, []).append(endpoint)
    links = [link for link in links if link.lab_id in endpoints]
    if not links:
        return []
    now = now or utcnow()
    if any(link.id is None for link in links):
        session.flush()
    # The patient URL is completed with the base URL at delivery (services know no config).
    events = [WebhookEvent(public_id="evt_" + secrets.token_hex(16), lab_id=link.lab_id,
                           type=event_type, online_payment_id=link.id,
                           data=status_object(link, ""), created_at=now) for link in links]
    session.add_all(events)
    session.flush()
    deliveries = [WebhookDelivery(lab_id=link.lab_id, endpoint_id=endpoint.id,
                                  event_id=event.id, online_payment_id=link.id,
                                  status=DeliveryStatus.PENDING, attempts=0,
                                  next_attempt_at=now, retry_until=now + RETRY_WINDOW,
                                  created_at=now)
                  for link, event in zip(links, events, strict=True)
                  for endpoint in endpoints[link.lab_id]]
    session.add_all(deliveries)
    session.flush()
    first_pending = _first_pending(session, deliveries)
    session.add_all([_job(delivery, now) for delivery in deliveries
                     if first_pending[(delivery.endpoint_id, delivery.online_payment_id)]
                     >= delivery.id])
    return events


def emit_for(obj: Any, link: OnlinePayment, event_type: str) -> None:
    """`emit` from a state move that was handed rows, not the session they belong to."""
    session = object_session(obj)
    if session is None:
        raise RuntimeError(f"{type(obj).__name__} is not in a session: no event can be written")
    emit(session, link, event_type)


def event_body(event: WebhookEvent, base_url: str) -> bytes:
    data = dict(event.data)
    for key in ("url", "qr_url"):
        if isinstance(data.get(key), str) and data[key].startswith("/"):
            data[key] = base_url + data[key]
    body = {"id": event.public_id, "type": event.type,
            "created": int(event.created_at.timestamp()), "data": data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# --- delivery ----------------------------------------------------------------------------------

def _schedule(session: Session, delivery: WebhookDelivery, when: datetime) -> None:
    session.add(_job(delivery, when))


def _job(delivery: WebhookDelivery, when: datetime) -> Job:
    return new_job(JOB_KIND, {"delivery_id": delivery.id}, lab_id=delivery.lab_id,
                   run_at=when, max_attempts=3)


def _first_pending(session: Session, deliveries: Sequence[WebhookDelivery]
                   ) -> dict[tuple[int, int | None], int]:
    """The oldest delivery still going per (endpoint, link) of `deliveries`: only that one is
    scheduled, a later one waits for it (in order per link)."""
    first: dict[tuple[int, int | None], int] = {}
    for delivery in deliveries:
        key = (delivery.endpoint_id, delivery.online_payment_id)
        first[key] = min(first.get(key, delivery.id), delivery.id)
    link_ids = list({d.online_payment_id for d in deliveries if d.online_payment_id is not None})
    endpoint_ids = list({d.endpoint_id for d in deliveries})
    for start in range(0, len(link_ids), IN_CHUNK):
        for endpoint_id, link_id, delivery_id in session.execute(select(
                WebhookDelivery.endpoint_id, WebhookDelivery.online_payment_id,
                func.min(WebhookDelivery.id)).where(
                WebhookDelivery.endpoint_id.in_(endpoint_ids),
                WebhookDelivery.online_payment_id.in_(link_ids[start:start + IN_CHUNK]),
                WebhookDelivery.status == DeliveryStatus.PENDING).group_by(
                WebhookDelivery.endpoint_id, WebhookDelivery.online_payment_id)):
            key = (endpoint_id, link_id)
            if key in first:
                first[key] = min(first[key], delivery_id)
    return first


def _earlier_pending(session: Session, delivery: WebhookDelivery) -> int | None:
    """An earlier delivery of the same link to the same endpoint still going: this one waits."""
    if delivery.online_payment_id is None:
        return None
    found: int | None = session.scalar(select(WebhookDelivery.id).where(
        WebhookDelivery.endpoint_id == delivery.endpoint_id,
        WebhookDelivery.online_payment_id == delivery.online_payment_id,
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.id < delivery.id).limit(1))
    return found


def _start_next(session: Session, delivery: WebhookDelivery, now: datetime) -> None:
    """The next delivery of this link to this endpoint, now that this one is settled."""
    if delivery.online_payment_id is None:
        return
    following = session.scalar(select(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == delivery.endpoint_id,
        WebhookDelivery.online_payment_id == delivery.online_payment_id,
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.id != delivery.id).order_by(WebhookDelivery.id).limit(1))
    if following is not None:
        due = following.next_attempt_at or now
        _schedule(session, following, max(due, now))


def backoff(attempts: int) -> timedelta:
    """Exponential from 30 s, capped at 6 h, with jitter (half fixed, half random)."""
    ceiling = min(FIRST_BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF)
    # Jitter spreads retries; it guards nothing, so a non-cryptographic random is right.
    jitter = 0.5 + 0.5 * random.random()  # nosec B311
    return timedelta(seconds=ceiling.total_seconds() * jitter)


def _excerpt(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")[:EXCERPT_CHARS]
    return "".join(c if c.isprintable() else " " for c in text).strip()


def post(target: Target, body: bytes, headers: Mapping[str, str], *,
         connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
         ca_file: str | None = None) -> Answer:
    """One POST to the checked address, never redirected, reading at most MAX_RESPONSE_READ."""
    started = time.monotonic()
    deadline = started + connect_timeout + read_timeout
    timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
    address = target.addresses[0]
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(address, target.port, timeout=timeout, retries=False,
                                           maxsize=1, server_hostname=target.host,
                                           assert_hostname=target.host, cert_reqs="CERT_REQUIRED",
                                           ca_certs=ca_file)
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False,
                                          maxsize=1)
    sent = {**headers, "Host": target.host_header, "User-Agent": USER_AGENT,
            "Content-Type": "application/json", "Accept-Encoding": "identity"}
    try:
        response = pool.urlopen("POST", target.path, body=body, headers=sent, redirect=False,
                                retries=False, preload_content=False, assert_same_host=False)
        kept = b""
        while len(kept) < MAX_RESPONSE_READ and time.monotonic() < deadline:
            chunk = response.read(min(1024, MAX_RESPONSE_READ - len(kept)), decode_content=False)
            if not chunk:
                break
            kept += chunk
        status = response.status
        error = f"redirect to {response.headers.get('Location', '?')[:200]} not followed" \
            if 300 <= status < 400 else None
        return Answer(status, _excerpt(kept), error, _ms(started))
    except Exception as exc:  # whatever the other side did, it is a failed attempt
        return Answer(None, None, _describe(exc), _ms(started))
    finally:
        pool.close()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "connect timeout"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "read timeout: no answer in time"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return f"TLS error: {str(exc)[:200]}"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "connection refused or unreachable"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def deliver(session: Session, config: Mapping[str, Any], delivery_id: int, *,
            now: datetime | None = None) -> WebhookDelivery | None:
    """One attempt of a due delivery (the `webhook.deliver` job); the caller commits."""
    now = now or utcnow()
    query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
    if session.get_bind().dialect.name == "postgresql":  # another worker is sending it
        query = query.with_for_update(skip_locked=True)
    delivery = session.scalar(query.execution_options(populate_existing=True))
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return delivery
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        return delivery  # a job of an earlier schedule; the current one is queued
    if _earlier_pending(session, delivery) is not None:
        return delivery  # that one starts this one when it is settled
    endpoint = delivery.endpoint
    lab = session.get_one(Lab, delivery.lab_id)
    if endpoint.deleted_at is not None or not endpoint.enabled:
        answer = Answer(None, None, "the endpoint was disabled or deleted", 0)
        delivery.retry_until = now  # nothing to wait for
    else:
        answer = _attempt(config, lab, endpoint, delivery, now)
    _record(session, delivery, answer, now)
    return delivery


def _attempt(config: Mapping[str, Any], lab: Lab, endpoint: WebhookEndpoint,
             delivery: WebhookDelivery, now: datetime) -> Answer:
    try:
        target = check_url(endpoint.url, config, lab)
    except EndpointError as exc:
        return Answer(None, None, f"refused: {exc.message}"[:500], 0)
    body = event_body(delivery.event, str(config.get("PORTAL_BASE_URL", "")))
    secrets_now = signing_secrets(config["PORTAL_ENCRYPTION_KEYS"], endpoint, now)
    headers = {SIGNATURE_HEADER: signature_header(secrets_now, body, int(now.timestamp())),
               "Portal-Event-Id": delivery.event.public_id,
               "Portal-Event-Type": delivery.event.type}
    return post(target, body, headers,
                connect_timeout=float(config.get("PORTAL_WEBHOOK_CONNECT_TIMEOUT",
                                                 CONNECT_TIMEOUT)),
                read_timeout=float(config.get("PORTAL_WEBHOOK_READ_TIMEOUT", READ_TIMEOUT)))


def _record(session: Session, delivery: WebhookDelivery, answer: Answer, now: datetime) -> None:
    session.add(WebhookAttempt(delivery_id=delivery.id, attempted_at=now,
                               status_code=answer.status_code, response_excerpt=answer.excerpt,
                               error=answer.error and answer.error[:500],
                               duration_ms=answer.duration_ms))
    delivery.attempts += 1
    delivery.last_status_code = answer.status_code
    delivery.last_response = answer.excerpt
    delivery.last_error = answer.error and answer.error[:500]
    if answer.ok:
        delivery.status = DeliveryStatus.SUCCEEDED
    elif now >= delivery.retry_until:
        delivery.status = DeliveryStatus.FAILED
    else:
        delivery.next_attempt_at = min(now + backoff(delivery.attempts), delivery.retry_until)
        _schedule(session, delivery, delivery.next_attempt_at)
        session.flush()
        return
    delivery.finished_at = now
    delivery.next_attempt_at = None
    session.flush()
    _start_next(session, delivery, now)


STALLED_AFTER = timedelta(minutes=10)


def resume_stalled(session: Session, *, now: datetime | None = None, limit: int = 500) -> int:
    """Deliveries overdue by STALLED_AFTER (their job lost: a worker died past its retries) get
    a new job; one more job than needed is harmless, `deliver` skips what is not due."""
    now = now or utcnow()
    overdue = list(session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.next_attempt_at < now - STALLED_AFTER)
        .order_by(WebhookDelivery.id).limit(limit)))
    resumed = 0
    for delivery in overdue:
        if _earlier_pending(session, delivery) is None:
            _schedule(session, delivery, now)
            resumed += 1
    return resumed


def redeliver(session: Session, lab_id: int, delivery_id: int, *,
              now: datetime | None = None) -> WebhookDelivery | None:
    """Sends the same event (same id and body) again, with a fresh retry window."""
    now = now or utcnow()
    delivery = session.scalar(select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.lab_id == lab_id))
    if delivery is None or delivery.endpoint.deleted_at is not None:
        return None
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = now
    delivery.retry_until = now + RETRY_WINDOW
    delivery.finished_at = None
    session.flush()
    if _earlier_pending(session, delivery) is None:
        _schedule(session, delivery, now)
    return delivery


def deliveries(session: Session, endpoint: WebhookEndpoint, *, before_id: int | None = None,
               limit: int = 50) -> list[WebhookDelivery]:
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id,
                                          WebhookDelivery.lab_id == endpoint.lab_id)
    if before_id:
        query = query.where(WebhookDelivery.id < before_id)
    return list(session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit)))


def attempts_of(session: Session, delivery_ids: Sequence[int]) -> dict[int, list[WebhookAttempt]]:
    found: dict[int, list[WebhookAttempt]] = {i: [] for i in delivery_ids}
    if delivery_ids:
        for attempt in session.scalars(select(WebhookAttempt).where(
                WebhookAttempt.delivery_id.in_(list(delivery_ids)))
                .order_by(WebhookAttempt.id)):
            found[attempt.delivery_id].append(attempt)
    return found
