"""Rate limits: per API key, per sign-in address, per patient link; shared through Redis.

With `PORTAL_REDIS_URL` the counters live in Redis, so a limit holds across every process and
node; without it each process counts on its own (the `limits` library's memory storage).
Both use a sliding window counter: two counters per key, no burst of twice the limit at a
window's edge as with a fixed window, and one round trip per request.

Sign-in keeps its lockout per account and address in the database (`LoginThrottle`): it is a
security state that must survive a Redis restart or eviction, and the one database is shared by
every node already. The window here sits in front of it, so a flood from one address is refused
before it costs an Argon2 hash and a row-locking transaction each.

A Redis outage must not stop payments: the limits fall back to this process's own counters
(open towards the shared limit, never a 500), log one warning per outage, count each fallback
in `portal_ratelimit_fallbacks_total`, and try Redis again after a few seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from flask import Flask, abort, current_app, request
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.storage import Storage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from limits.util import WindowStats

from . import metrics

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 0.25  # seconds: a request waits at most this long on a sick Redis
RETRY_REDIS_AFTER = 5.0  # seconds between attempts while Redis is down

# Patient endpoints limited per link and address: starting a checkout calls the gateway,
# status polling and receipts read the database. The pay page itself is not limited here.
PATIENT_ENDPOINTS = frozenset({"pay.start", "pay.status_json", "pay.receipt"})
LOGIN_ENDPOINT = "auth.login"


@dataclass(frozen=True)
class Rule:
    name: str
    item: RateLimitItem


class LocalWindows:
    """This process's sliding window counters: the arithmetic of `limits`' sliding window
    counter over a plain dict.

    `limits`' MemoryStorage starts a new expiry thread (threading.Timer) on any hit more than
    10 ms after its last one, which is a thread per request at an API client's ordinary pace.
    Here windows that can no longer count are dropped inline, at most once a SWEEP_EVERY.
    """

    SWEEP_EVERY = 60.0  # seconds

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], tuple[int, int]] = {}  # (key, window) -> hits, expiry
        self._next_sweep = time.time() + self.SWEEP_EVERY

    def _window(self, item: RateLimitItem, ids: tuple[str, ...], now: float
                ) -> tuple[str, int, int, int, int]:
        """key, expiry, this window's number, and the previous and current windows' hits."""
        key, expiry = item.key_for(*ids), item.get_expiry()
        number = int(now // expiry)
        previous = self._counts.get((key, number - 1), (0, 0))[0]
        current = self._counts.get((key, number), (0, 0))[0]
        return key, expiry, number, previous, current

    def hit(self, item: RateLimitItem, *ids: str) -> bool:
        now = time.time()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            key, expiry, number, previous, current = self._window(item, ids, now)
            # The previous window counts for the part of it still inside the sliding window.
            weighted = previous * (1 - (now % expiry) / expiry) + current
            if math.floor(weighted) + 1 > item.amount:
                return False
            self._counts[(key, number)] = (current + 1, expiry)
            return True

    def get_window_stats(self, item: RateLimitItem, *ids: str) -> WindowStats:
        """When the next hit may be allowed, as `limits` reckons it (for Retry-After)."""
        now = time.time()
        with self._lock:
            _key, expiry, _number, previous, current = self._window(item, ids, now)
        left_in_window = expiry - now % expiry
        weighted = previous * left_in_window / expiry + current
        remaining = max(0, item.amount - math.floor(weighted))
        reset_in = math.inf
        if previous:
            reset_in = left_in_window % (expiry / previous)
        if current:
            reset_in = min(reset_in, left_in_window)
        return WindowStats(now + (0 if reset_in == math.inf else reset_in), remaining)

    def _sweep(self, now: float) -> None:
        self._counts = {(key, number): value for (key, number), value in self._counts.items()
                        if number >= int(now // value[1]) - 1}
        self._next_sweep = now + self.SWEEP_EVERY

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class Limits:
    """One per app: the rules, the shared storage (or none) and this process's fallback."""

    def __init__(self, redis_url: str | None, *, api: int, login: int, patient: int,
                 prefix: str = "portal") -> None:
        self._lock = threading.Lock()
        self.rules = {"api": Rule("api", RateLimitItemPerMinute(api)),
                      "login": Rule("login", RateLimitItemPerMinute(login)),
                      "patient": Rule("patient", RateLimitItemPerMinute(patient))}
        self._local: LocalWindows | None = None
        self.shared: SlidingWindowCounterRateLimiter | None = None
        self.backend = "memory"
        if redis_url:
            storage: Storage = storage_from_string(
                redis_url, key_prefix=f"{prefix}:ratelimit", socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT, health_check_interval=30)
            self.shared = SlidingWindowCounterRateLimiter(storage)
            self.backend = "redis"
        self._down_until = 0.0

    @property
    def local(self) -> LocalWindows:
        """This process's counters; made on first need."""
        if self._local is None:
            with self._lock:
                if self._local is None:
                    self._local = LocalWindows()
        return self._local

    def take(self, rule_name: str, *identifiers: object) -> int:
        """0 when the request may go ahead, else the seconds to wait (Retry-After)."""
        rule = self.rules[rule_name]
        ids = [str(i) for i in identifiers]
        limiter = self._limiter()
        try:
            allowed = limiter.hit(rule.item, *ids)
            if allowed:
                return 0
            reset_at = limiter.get_window_stats(rule.item, *ids).reset_time
        except Exception as exc:  # noqa: BLE001  # any storage failure: fall back, never 500
            if limiter is self.local:
                raise
            self._redis_failed(exc)
            return self.take(rule_name, *identifiers)
        metrics.RATE_LIMITED.labels(rule=rule.name).inc()
        return max(1, math.ceil(reset_at - time.time()))

    def _limiter(self) -> SlidingWindowCounterRateLimiter | LocalWindows:
        if self.shared is None or time.monotonic() < self._down_until:
            return self.local
        if self._down_until:
            with self._lock:
                if self._down_until:
                    self._down_until = 0.0
                    log.warning("rate limits: Redis answers again; limits are shared again")
        return self.shared

    def _redis_failed(self, exc: Exception) -> None:
        metrics.RATE_LIMIT_FALLBACKS.labels(backend="redis").inc()
        with self._lock:
            first = self._down_until == 0.0
            self._down_until = time.monotonic() + RETRY_REDIS_AFTER
        if first:
            log.warning("rate limits: Redis unavailable (%s: %s); each process limits on its "
                        "own until it is back", type(exc).__name__, str(exc)[:200])

    def reset(self) -> None:
        """Forgets every count (tests); the shared storage's keys under this prefix too."""
        if self._local is not None:
            self._local.reset()
        if self.shared is not None:
            self.shared.storage.reset()


def build(config) -> Limits:
    return Limits(config.get("PORTAL_REDIS_URL"),
                  api=int(config["PORTAL_API_RATE_LIMIT"]),
                  login=int(config["PORTAL_LOGIN_RATE_LIMIT"]),
                  patient=int(config["PORTAL_PATIENT_RATE_LIMIT"]),
                  prefix=config.get("PORTAL_REDIS_PREFIX", "portal"))


def limits() -> Limits:
    found: Limits | None = current_app.extensions.get("portal_limits")
    if found is None:  # built on first use, so that tests may change the settings first
        found = current_app.extensions["portal_limits"] = build(current_app.config)
    return found


def take(rule_name: str, *identifiers: object) -> int:
    return limits().take(rule_name, *identifiers)


def _client_address() -> str:
    return request.remote_addr or "-"


def guard():
    """Before the views: sign-in attempts per address, patient endpoints per link and address."""
    endpoint = request.endpoint
    if endpoint == LOGIN_ENDPOINT and request.method == "POST":
        wait = take("login", _client_address())
    elif endpoint in PATIENT_ENDPOINTS:
        token = (request.view_args or {}).get("token", "")
        wait = take("patient", endpoint, token, _client_address())
    else:
        return None
    if wait:
        if endpoint in PATIENT_ENDPOINTS:
            _speak_the_links_language(token)
        abort(429, retry_after=wait)
    return None


def _speak_the_links_language(token: str) -> None:
    """The refusal page in the link's language, as its pages are (one query, refusals only)."""
    from . import i18n
    from .extensions import db_session
    from .services.links import get_link_by_token

    link = get_link_by_token(db_session(), token)
    if link is not None:
        i18n.use(i18n.choose(link.language, link.lab.default_language))


def init_app(app: Flask) -> None:
    app.before_request(guard)
