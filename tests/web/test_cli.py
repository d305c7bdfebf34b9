import json

from cryptography.fernet import Fernet
from sqlalchemy import select

from portal.models import Lab, PaymentGatewayKeys, Role, User
from portal.services.auth import verify_password
from portal.services.keys import decrypt


def invoke(app, args, **kwargs):
    return app.test_cli_runner().invoke(args=args, **kwargs)


def test_demo_is_idempotent(app, db, monkeypatch):
    monkeypatch.delenv("PORTAL_DEMO_PASSWORD", raising=False)
    for _ in range(2):
        result = invoke(app, ["demo"])
        assert result.exit_code == 0, result.output
    lab = db.scalar(select(Lab).where(Lab.slug == "demo"))
    assert (lab.name, lab.currency, lab.default_gateway) == ("Demo Diagnostics", "INR", "sandbox")
    users = {u.email: u for u in db.scalars(select(User))}
    assert users["admin@demo.test"].role == Role.ADMIN
    assert users["staff@demo.test"].role == Role.STAFF
    assert verify_password(users["staff@demo.test"].password_hash, "demo-pass-123")
    assert len(db.scalars(select(PaymentGatewayKeys)).all()) == 1


def test_lab_and_user_create(app, db, monkeypatch):
    assert invoke(app, ["lab", "create", "city", "--name", "City Labs",
                        "--currency", "AED", "--timezone", "Asia/Dubai",
                        "--country", "AE"]).exit_code == 0
    monkeypatch.setenv("PORTAL_USER_PASSWORD", "a strong password")
    result = invoke(app, ["user", "create", "Boss@City.test", "--lab", "city", "--role", "admin"])
    assert result.exit_code == 0, result.output
    user = db.scalar(select(User).where(User.email == "boss@city.test"))
    assert user.role == Role.ADMIN and user.password_hash.startswith("$argon2id$")
    assert "a strong password" not in result.output


def test_cli_refusals(app, monkeypatch):
    assert "not an ISO 4217" in invoke(app, ["lab", "create", "x", "--name", "X",
                                             "--currency", "RUP"]).output
    monkeypatch.setenv("PORTAL_USER_PASSWORD", "short")
    invoke(app, ["lab", "create", "y", "--name", "Y", "--currency", "INR"])
    assert "at least 10 characters" in invoke(app, ["user", "create", "a@y.test", "--lab",
                                                   "y"]).output
    assert "No lab with slug" in invoke(app, ["user", "create", "a@y.test", "--lab",
                                             "nope"]).output


def test_gateway_set(app, db):
    invoke(app, ["lab", "create", "gw", "--name", "GW", "--currency", "INR"])
    result = invoke(app, ["gateway", "set", "gw", "sandbox"],
                    input=json.dumps({"webhook_secret": "whsec_from_cli", "mode": "live"}))
    assert result.exit_code == 0, result.output
    assert "whsec_from_cli" not in result.output
    row = db.scalar(select(PaymentGatewayKeys))
    assert row.mode.value == "live"
    assert decrypt(app.config["PORTAL_ENCRYPTION_KEYS"], row.credentials_encrypted) == {
        "webhook_secret": "whsec_from_cli"}


def test_gateway_set_refuses_unknown_and_missing_fields(app):
    invoke(app, ["lab", "create", "gw", "--name", "GW", "--currency", "INR"])
    unknown = invoke(app, ["gateway", "set", "gw", "sandbox"],
                     input=json.dumps({"webhook_secret": "x", "api_key": "y"}))
    assert unknown.exit_code != 0 and "unknown field(s) for sandbox: api_key" in unknown.output
    missing = invoke(app, ["gateway", "set", "gw", "sandbox"], input="{}")
    assert missing.exit_code != 0 and "webhook_secret is required" in missing.output
    assert "not a JSON object" in invoke(app, ["gateway", "set", "gw", "sandbox"],
                                         input="[1]").output
    assert "unknown gateway" in invoke(app, ["gateway", "set", "gw", "paypal"],
                                       input="{}").output


def test_keys_rotate(app, db):
    invoke(app, ["lab", "create", "gw", "--name", "GW", "--currency", "INR"])
    invoke(app, ["gateway", "set", "gw", "sandbox"], input=json.dumps({"webhook_secret": "s3"}))
    old_key = app.config["PORTAL_ENCRYPTION_KEYS"][0]
    new_key = Fernet.generate_key().decode()
    app.config["PORTAL_ENCRYPTION_KEYS"] = [new_key, old_key]
    result = invoke(app, ["keys", "rotate"])
    assert result.exit_code == 0 and "Re-encrypted 1" in result.output
    token = db.scalar(select(PaymentGatewayKeys)).credentials_encrypted
    assert decrypt([new_key], token) == {"webhook_secret": "s3"}  # the old key can go now


def test_db_upgrade_is_idempotent(app):
    result = invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0 and "up to date" in result.output


def test_instance_secrets_are_generated_once(tmp_path, monkeypatch):
    from portal.config import load_settings

    first = load_settings(str(tmp_path), {})
    second = load_settings(str(tmp_path), {})
    assert first["SECRET_KEY"] == second["SECRET_KEY"] and len(first["SECRET_KEY"]) > 40
    assert first["PORTAL_ENCRYPTION_KEYS"] == second["PORTAL_ENCRYPTION_KEYS"]
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    Fernet(first["PORTAL_ENCRYPTION_KEYS"][0].encode())


def test_healthz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
