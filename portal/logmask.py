"""One masking filter for every log line: the portal's, the libraries' and gunicorn's.

It knows every secret the process holds: the PORTAL_* settings (and any *_TOKEN, *_KEY,
*_SECRET, *_PASSWORD variable, and passwords inside URLs), and every secret credential field
of every lab, loaded at start-up and added whenever credentials are saved or decrypted
(`portal.services.keys`), so a process learns a lab's secret before it can use, and log, it.
Bearer/Basic tokens and the portal's own API keys are masked by their shape as well.

The filter sits on handlers, not loggers: a logger's filters never see the records that
propagate to it from library loggers. `install()` puts it on every handler that exists;
gunicorn's own handlers get it from `GunicornLogger`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import traceback
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from .services.api_keys import KEY_FORMAT

log = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 6  # shorter values ("1", "test", "INR") are not worth breaking logs over
MASKED = "[masked]"
SECRET_NAME = re.compile(
    r"(?:^|_|PG)(TOKEN|KEYS?|SECRETS?|PASSWORDS?|PASSWD|PASS|PWD|CREDENTIALS?)$", re.IGNORECASE)
NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})  # the shell's working folders, not passwords
URL_NAME = re.compile(r"(_URL|_URI|_DSN)$", re.IGNORECASE)
SECRET_QUERY_PARAM = re.compile(r"key|token|secret|pass|pwd|auth|sig", re.IGNORECASE)
# A key's published kind (Stripe's, Razorpay's), kept in front of the mask of a long key.
KIND_PREFIX = re.compile(r"^(?:(?:sk|rk|pk|rzp)_(?:test|live)_|whsec_)")
KIND_SHOWN_FROM = 20
AUTH_TOKEN = re.compile(
    r"\b((?:O-)?Bearer|Basic|Token)(\s+)(?=[A-Za-z0-9._~+/=-]*[0-9=])[A-Za-z0-9._~+/=-]{12,}")
SCHEME_VALUE = re.compile(r"^(?:O-)?(?:Bearer|Basic|Token|Key|ApiKey)\s+(\S+)$", re.IGNORECASE)
STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def masked(secret: str) -> str:
    kind = KIND_PREFIX.match(secret) if len(secret) >= KIND_SHOWN_FROM else None
    return (kind.group(0) if kind else "") + "…" + MASKED


def _variants(secret: str) -> set[str]:
    """The ways a secret shows up in a log line: as is, URL-encoded, JSON-escaped."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret),
             json.dumps(secret)[1:-1]}
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def _trie_pattern(words: Iterable[str]) -> re.Pattern | None:
    """One regex matching any of `words`, longest first, built as a trie.

    A flat alternation of thousands of literals is tried branch by branch at every position;
    the trie costs one branch per distinct character instead.
    """
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    if not trie:
        return None

    def build(node: dict) -> str:
        ends_here = "" in node
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items())
                    if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends_here else body

    return re.compile(build(trie))


class SecretRegistry:
    """The set of secret values to mask; grows only (an old key is still a secret)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._originals: dict[str, str] = {}  # each form -> the secret it comes from
        self._pattern: re.Pattern | None = None

    def __contains__(self, value: str) -> bool:
        return value in self._originals

    def __len__(self) -> int:
        return len(set(self._originals.values()))

    def add(self, values: Iterable[str | None]) -> None:
        fresh = {v.strip() for v in values if isinstance(v, str)
                 and len(v.strip()) >= MIN_SECRET_LENGTH and v.strip() not in self._originals}
        if not fresh:
            return
        with self._lock:
            originals = dict(self._originals)
            for secret in fresh:
                for form in _variants(secret):
                    originals.setdefault(form, secret)
            pattern = _trie_pattern(originals)
            self._originals, self._pattern = originals, pattern  # readers see one or the other

    def mask(self, text: str) -> str:
        pattern, originals = self._pattern, self._originals
        if pattern is not None:
            text = pattern.sub(lambda m: masked(originals.get(m.group(0), m.group(0))), text)
        if "lpk_" in text:
            text = KEY_FORMAT.sub(lambda m: m.group(1) + "_…" + MASKED, text)
        if "Bearer" in text or "Basic" in text or "Token" in text:
            text = AUTH_TOKEN.sub(lambda m: m.group(1) + m.group(2) + MASKED, text)
        return text


SECRETS = SecretRegistry()


def remember(values: Iterable[str | None]) -> None:
    """Adds secret values the process now holds; cheap when they are known already."""
    SECRETS.add(values)


def settings_secrets(settings: Mapping[str, object]) -> list[str]:
    """Secret values among settings or environment variables, found by their names."""
    found: list[str] = []
    for name, value in settings.items():
        if not isinstance(name, str):
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if not isinstance(item, str) or not item:
                continue
            if SECRET_NAME.search(name) and name.upper() not in NOT_SECRET_NAMES:
                found += item.split(",") if name.upper().endswith("KEYS") else [item]
                scheme = SCHEME_VALUE.match(item)  # "Bearer <key>": the key alone shows too
                found += [scheme.group(1)] if scheme else []
            elif URL_NAME.search(name) or "://" in item:
                found += url_secrets(item)
    return list(dict.fromkeys(found))


def url_secrets(url: str) -> list[str]:
    """The password of a URL and its secret-looking query values (`?api_key=...`)."""
    try:
        parts = urlsplit(url.strip())
        password = parts.password
    except ValueError:
        return []
    found = []
    if password:
        found += [password, unquote(password)]
    found += [v for k, v in parse_qsl(parts.query) if SECRET_QUERY_PARAM.search(k)]
    return list(dict.fromkeys(found))


def _format_exception(exc_info) -> str:
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")


def mask_record(record: logging.LogRecord) -> None:
    """Rewrites a record in place: message formatted then masked; traceback and extras too."""
    if getattr(record, "_secrets_masked", False):
        return
    mask = SECRETS.mask
    try:
        message = record.getMessage()
    except Exception:  # a bad format string must not hide what it was given
        message = f"{record.msg} (unformatted arguments: {record.args!r})"
    record.msg, record.args = mask(message), ()
    if "message" in vars(record):  # cached by a formatter that ran before this filter
        record.message = record.msg
    if record.exc_info:
        # Formatters fall back on exc_text; dropping exc_info keeps them from rebuilding the
        # unmasked traceback (and its exception message) themselves.
        record.exc_text = record.exc_text or _format_exception(record.exc_info)
        record.exc_info = None
    if record.exc_text:
        record.exc_text = mask(record.exc_text)
    if record.stack_info:
        record.stack_info = mask(record.stack_info)
    for name, value in list(vars(record).items()):
        if name not in STANDARD_ATTRIBUTES and isinstance(value, str):
            setattr(record, name, mask(value))
    record._secrets_masked = True


class MaskingFilter(logging.Filter):
    """Never drops a record; masks every known secret in it before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            mask_record(record)
        except Exception:  # logging must never raise into its caller, nor leak on the way
            record.msg, record.args, record.exc_info, record.exc_text = (
                "(log record dropped: it could not be masked)", (), None, None)
        return True


FILTER = MaskingFilter()


def install_on(*handlers: logging.Handler) -> None:
    for handler in handlers:
        if FILTER not in handler.filters:
            handler.addFilter(FILTER)


def all_handlers() -> list[logging.Handler]:
    """Every handler attached anywhere: the root's, every named logger's, the last resort."""
    loggers = [logging.getLogger()] + [
        logger for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)]
    handlers = [h for logger in loggers for h in logger.handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    return handlers


def install(config: Mapping[str, object] | None = None) -> None:
    """Learns the settings' secrets and puts the filter on every handler now attached.

    Call again after adding handlers; it is idempotent.
    """
    remember(settings_secrets(os.environ))
    if config is not None:
        remember(settings_secrets(config))
    from flask.logging import default_handler  # the app logger's own, in debug runs

    install_on(default_handler, *all_handlers())
    _silence_stripe_console()


def remember_stored_secrets(app) -> None:
    """Every lab's stored secrets, at start-up; a database not up yet is no reason to fail."""
    from sqlalchemy.exc import SQLAlchemyError

    from .services.keys import remember_stored_secrets as remember_stored

    try:
        with app.extensions["portal_db"].session_factory() as session:
            count = remember_stored(session, app.config["PORTAL_ENCRYPTION_KEYS"])
    except SQLAlchemyError as exc:
        log.debug("stored gateway secrets not loaded for log masking yet (%s); each is added "
                 "when first used", type(exc).__name__)
        return
    log.debug("log masking knows %d stored gateway key set(s)", count)


def _silence_stripe_console() -> None:
    """STRIPE_LOG=info|debug makes the SDK print to stderr past every handler: log it instead."""
    import stripe
    import stripe._util  # the SDK reads STRIPE_LOG once, into this module

    if getattr(stripe._util, "STRIPE_LOG", None) or stripe.log:
        stripe._util.STRIPE_LOG = None
        stripe.log = None


def gunicorn_logger_class():
    """gunicorn's logger with the filter on its error and access handlers (`logger_class`)."""
    from gunicorn.glogging import Logger

    class GunicornLogger(Logger):
        def setup(self, cfg) -> None:
            super().setup(cfg)
            remember(settings_secrets(os.environ))  # the arbiter may never build the app
            install_on(*self.error_log.handlers, *self.access_log.handlers)
            from . import logs

            if logs.wants_json():  # gunicorn's own lines as JSON objects too
                logs.prepare(*self.error_log.handlers)

    return GunicornLogger
