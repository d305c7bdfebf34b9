"""The log masking filter: what it knows, what it rewrites, and that it never breaks logging."""

import io
import logging

import pytest

from portal import logmask
from portal.logmask import SecretRegistry
from portal.services.keys import configured_gateway, encrypt, save_credentials
from tests.conftest import ENCRYPTION_KEY, make_app

SECRET = "sk_test_51LogMaskSecretValue0001"


@pytest.fixture
def registry(monkeypatch):
    """A registry of this test's own, so what other tests taught the process does not help."""
    fresh = SecretRegistry()
    monkeypatch.setattr(logmask, "SECRETS", fresh)
    return fresh


@pytest.fixture
def logger():
    """A logger with one masked handler, as `install()` leaves every handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s | %(url)s"))
    logmask.install_on(handler)
    log = logging.getLogger("tests.logmask")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.stream = stream
    yield log
    log.removeHandler(handler)
    log.propagate = True


def test_message_args_traceback_stack_and_extras_are_masked(registry, logger):
    registry.add([SECRET])
    try:
        raise RuntimeError(f"Invalid API Key provided: {SECRET}")
    except RuntimeError as exc:
        logger.error("call failed: %s (%r) %s", exc, {"key": SECRET}, SECRET, exc_info=True,
                     stack_info=True, extra={"url": f"https://api.test/?key={SECRET}"})
    logger.info("plain %d", 7, extra={"url": "-"})
    out = logger.stream.getvalue()
    assert SECRET not in out
    assert "call failed: Invalid API Key provided: sk_test_…[masked]" in out
    assert "{'key': 'sk_test_…[masked]'}" in out
    assert "RuntimeError: Invalid API Key provided: sk_test_…[masked]" in out  # traceback
    assert "?key=sk_test_…[masked]" in out  # the extra
    assert "plain 7 | -" in out


def test_record_is_rewritten_for_every_later_handler(registry, logger):
    registry.add([SECRET])
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    logger.addHandler(Keep())
    try:
        raise ValueError(SECRET)
    except ValueError:
        logger.exception("token %s", SECRET, extra={"url": SECRET})
    (record,) = seen
    assert record.args == () and record.exc_info is None
    assert SECRET not in record.getMessage() + record.exc_text + record.url
    assert "ValueError: sk_test_…[masked]" in record.exc_text


def test_stack_info_is_masked(registry, logger):
    registry.add(["stack-secret-0042"])
    logger.info("where", stack_info=True, extra={"url": "-"})  # stack-secret-0042
    out = logger.stream.getvalue()
    assert "Stack (most recent call last)" in out
    assert "stack-secret-0042" not in out and "# …[masked]" in out


def test_short_values_are_left_alone(registry):
    registry.add(["1", "test", "INR", "abc12", "", None, "  abc123  "])
    assert registry.mask("1 test INR abc12 abc123") == "1 test INR abc12 …[masked]"
    assert len(registry) == 1


def test_encoded_forms_and_longest_match(registry):
    odd = 'p@ss w/rd:ü&"x'
    registry.add([odd, "abcdef123", "abcdef123456789xyz"])
    text = ("raw p@ss w/rd:ü&\"x url p%40ss%20w%2Frd%3A%C3%BC%26%22x "
            "form p%40ss+w%2Frd%3A%C3%BC%26%22x json p@ss w/rd:\\u00fc&\\\"x "
            "long abcdef123456789xyz short abcdef123")
    masked = registry.mask(text)
    assert masked == ("raw …[masked] url …[masked] form …[masked] json …[masked] "
                      "long …[masked] short …[masked]")


def test_known_shapes_are_masked_without_being_registered(registry):
    key = "lpk_3f9a1c2b4d5e_" + "A" * 43
    text = (f"Authorization: Bearer abcdef0123456789 O-Bearer eyJhbGciOi.J9x1 "
            f"Basic dXNlcjpwYXNzd29yZA== api key {key}")
    assert registry.mask(text) == ("Authorization: Bearer [masked] O-Bearer [masked] "
                                   "Basic [masked] api key lpk_3f9a1c2b4d5e_…[masked]")
    words = "Basic authentication failed; send Authorization: Bearer <key>"
    assert registry.mask(words) == words


def test_only_a_long_keys_published_kind_is_kept(registry):
    registry.add(["whsec_" + "q" * 30, "rk_live_" + "r" * 30, "whsec_short",
                  "horse_battery_staple_correct"])
    assert registry.mask("whsec_" + "q" * 30) == "whsec_…[masked]"
    assert registry.mask("rk_live_" + "r" * 30) == "rk_live_…[masked]"
    assert registry.mask("whsec_short") == "…[masked]"
    assert registry.mask("horse_battery_staple_correct") == "…[masked]"


def test_stripe_console_printing_is_turned_off(monkeypatch):
    import stripe
    import stripe._util

    monkeypatch.setattr(stripe._util, "STRIPE_LOG", "info")
    logmask.install()
    assert stripe._util._console_log_level() is None  # the SDK would print past logging


def test_settings_secrets_by_name_and_in_urls():
    config = {
        "SECRET_KEY": "session-signing-secret",
        "PORTAL_ENCRYPTION_KEYS": ["fernet-key-one=", "fernet-key-two="],
        "PORTAL_SMTP_URL": "smtp://mailer:p%40ss-word@mail.example:587?starttls=1",
        "PORTAL_TWILIO_AUTH_TOKEN": "twilio-auth-token",
        "PORTAL_TWILIO_ACCOUNT_SID": "AC123",
        "PORTAL_SMS_HTTP_API_KEY": "Bearer sms-api-key",
        "PORTAL_SMS_HTTP_URL": "https://sms.example/send?apikey=query-secret&sender=LABSMS",
        "PORTAL_SMS_HTTP_AUTH_HEADER": "Authorization",
        "PORTAL_DATABASE_URL": "postgresql+psycopg://portal:db-password@db/portal",
        "PORTAL_REDIS_URL": "redis://:redis-password@cache:6379/0",
        "PORTAL_METRICS_TOKEN": "metrics-token",
        "PORTAL_BASE_URL": "https://pay.example",
        "PORTAL_MAIL_FROM": "payments@example.com",
        "PORTAL_API_RATE_LIMIT": 120,
    }
    assert sorted(logmask.settings_secrets(config)) == sorted([
        "session-signing-secret", "fernet-key-one=", "fernet-key-two=",
        "p%40ss-word", "p@ss-word", "twilio-auth-token", "Bearer sms-api-key", "sms-api-key",
        "query-secret", "db-password", "redis-password", "metrics-token"])
    assert logmask.settings_secrets({"PORTAL_ENCRYPTION_KEYS": "new-fernet-key,old-fernet-key"}
                                    ) == ["new-fernet-key", "old-fernet-key"]
    assert logmask.settings_secrets({"PGPASSWORD": "pg-password", "MONKEY": "not-a-secret",
                                     "BYPASS": "not-a-secret"}) == ["pg-password"]
    # The shell's working folder is no password: masking it would hide every path in a traceback.
    assert logmask.settings_secrets({"PWD": "/srv/portal", "OLDPWD": "/root",
                                     "DB_PWD": "db-pwd-secret"}) == ["db-pwd-secret"]


def test_install_learns_environment_and_config(registry, monkeypatch):
    monkeypatch.setenv("VENDOR_API_SECRET", "vendor-secret-from-env")
    monkeypatch.setenv("PORTAL_SMS_HTTP_API_KEY", "sms-key-from-env")
    logmask.install({"PORTAL_TWILIO_AUTH_TOKEN": "twilio-token-from-config"})
    for value in ("vendor-secret-from-env", "sms-key-from-env", "twilio-token-from-config"):
        assert value in registry


def test_install_puts_the_filter_on_every_handler():
    root_handler, library_handler = logging.StreamHandler(), logging.StreamHandler()
    logging.getLogger().addHandler(root_handler)
    library = logging.getLogger("tests.logmask.library")
    library.addHandler(library_handler)
    try:
        logmask.install()
        logmask.install()
        for handler in (root_handler, library_handler, logging.lastResort):
            assert handler.filters.count(logmask.FILTER) == 1
    finally:
        logging.getLogger().removeHandler(root_handler)
        library.removeHandler(library_handler)


def test_a_broken_record_is_still_logged_and_masked(registry, logger):
    registry.add([SECRET])
    logger.error("count %d of " + SECRET, "many", extra={"url": "-"})
    out = logger.stream.getvalue()
    assert "count %d of sk_test_…[masked] (unformatted arguments: ('many',))" in out
    assert SECRET not in out


def test_lab_secrets_are_known_from_saving_using_and_start_up(
        app, db, build, registry, tmp_path, monkeypatch):
    lab = build.lab(sandbox_secret=None)
    keys = app.config["PORTAL_ENCRYPTION_KEYS"]
    save_credentials(db, keys, lab, "razorpay", {
        "key_id": "rzp_test_PublicKeyId01", "key_secret": "razorpay-key-secret-01",
        "webhook_secret": "razorpay-webhook-secret-01"})
    assert "razorpay-key-secret-01" in registry and "razorpay-webhook-secret-01" in registry
    assert "rzp_test_PublicKeyId01" not in registry  # a public id stays readable

    save_credentials(db, keys, lab, "razorpay", {"key_id": "rzp_test_PublicKeyId01",
                                                 "key_secret": "razorpay-key-secret-02"})
    db.commit()
    assert "razorpay-key-secret-01" in registry and "razorpay-key-secret-02" in registry

    # Another process: it learns the stored secrets at start-up...
    monkeypatch.setattr(logmask, "SECRETS", SecretRegistry())
    make_app(tmp_path / "other", monkeypatch, app.config["PORTAL_DATABASE_URL"])
    assert "razorpay-key-secret-02" in logmask.SECRETS
    assert "razorpay-webhook-secret-01" in logmask.SECRETS

    # ...and, whatever it missed, when it decrypts credentials to use them.
    monkeypatch.setattr(logmask, "SECRETS", SecretRegistry())
    gateway = configured_gateway(db, app.config, lab.id, "razorpay")
    assert gateway.credentials["key_secret"] in logmask.SECRETS


def test_start_up_survives_a_database_without_tables(tmp_path, monkeypatch):
    make_app(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'empty.db'}")  # no error


def test_start_up_skips_key_sets_it_cannot_decrypt(app, db, build, registry):
    from portal.models import PaymentGatewayKeys
    from portal.services.keys import remember_stored_secrets

    lab = build.lab(sandbox_secret=None)
    other_key = "ZmVybmV0LWtleS10aGF0LWlzLW5vdC1vdXJzLTAwMDA="
    db.add(PaymentGatewayKeys(lab_id=lab.id, gateway="sandbox", credentials_encrypted=encrypt(
        [other_key], {"webhook_secret": "unreadable-secret-0001"})))
    db.add(PaymentGatewayKeys(lab_id=build.lab(sandbox_secret=None).id, gateway="sandbox",
                              credentials_encrypted=encrypt([ENCRYPTION_KEY], {
                                  "webhook_secret": "readable-secret-0001"})))
    db.commit()
    assert remember_stored_secrets(db, [ENCRYPTION_KEY]) == 1
    assert "readable-secret-0001" in registry
