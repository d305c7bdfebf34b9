"""/admin/api-keys, `portal api-key create` and `authenticate_api_key` (for the JSON API)."""

from __future__ import annotations

import hashlib
import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.models import ApiKey, AuditLog, utcnow
from portal.services.api_keys import authenticate_api_key, create_api_key
from tests.conftest import csrf_from

SHOWN = re.compile(r'id="new-key" type="text" readonly value="([^"]+)"')
KEY = re.compile(r"lpk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def session(app):
    """An ordinary session of the app's database, as the JSON API will use."""
    with app.extensions["portal_db"].session_factory() as session:
        yield session


def reload(db, key_id: int) -> ApiKey:
    return db.scalar(select(ApiKey).where(ApiKey.id == key_id))


def create_on_page(client, name: str = "LIS billing"):
    token = csrf_from(client.get("/admin/api-keys").get_data(as_text=True))
    return client.post("/admin/api-keys", data={"csrf_token": token, "name": name})


def shown_key(response) -> str:
    match = SHOWN.search(response.get_data(as_text=True))
    assert match, "the new key is not on the page"
    return html.unescape(match.group(1))


def test_create_shows_the_key_once_and_stores_only_its_hash(admin_client, admin, db, lab):
    response = create_on_page(admin_client, "  LIS billing ")
    assert response.status_code == 201
    key = shown_key(response)
    assert KEY.fullmatch(key)
    row = db.scalar(select(ApiKey))
    assert (row.lab_id, row.name, row.created_by_id) == (lab.id, "LIS billing", admin.id)
    assert key.startswith(row.prefix + "_") and len(row.prefix) == 16
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    secret = key.split("_", 2)[2]
    assert secret not in row.key_hash and row.last_used_at is None and row.revoked_at is None

    later = admin_client.get("/admin/api-keys").get_data(as_text=True)
    assert key not in later and secret not in later  # shown once
    assert f"{row.prefix}_…" in later and "LIS billing" in later and "Never" in later
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "api_key.create"))
    assert entry.detail == {"name": "LIS billing", "prefix": row.prefix, "via": "web"}
    assert entry.user_id == admin.id and entry.ip_address == "127.0.0.1"


def test_the_secret_has_256_random_bits_and_keys_differ(db, lab):
    keys = {create_api_key(db, lab.id, f"k{i}", actor_id=None, ip=None).key for i in range(20)}
    db.commit()
    assert len(keys) == 20 and len({k[:16] for k in keys}) == 20
    for key in keys:  # 43 url-safe base64 characters = 32 bytes from secrets.token_urlsafe
        assert len(key.split("_", 2)[2]) == 43


def test_a_name_is_required(admin_client, db):
    response = create_on_page(admin_client, "   ")
    assert response.status_code == 422
    assert "Name the key" in response.get_data(as_text=True)
    assert create_on_page(admin_client, "x" * 101).status_code == 422
    assert db.scalar(select(ApiKey)) is None


def test_authenticate_accepts_only_the_exact_live_key(session, db, lab):
    new = create_api_key(db, lab.id, "LIS", actor_id=None, ip=None)
    db.commit()
    key = new.key
    assert authenticate_api_key(session, key).id == new.api_key.id
    session.commit()
    prefix, secret = key[:16], key[17:]
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for wrong in (f"{prefix}_{flipped}", f"lpk_{'0' * 12}_{secret}", key[:-1], key + "x",
                  f"Bearer {key}", key.upper(), "", None, "lpk_", key.replace("_", "-", 1)):
        assert authenticate_api_key(session, wrong) is None, wrong


def test_a_revoked_key_is_refused(session, db, lab):
    new = create_api_key(db, lab.id, "LIS", actor_id=None, ip=None)
    db.commit()
    assert authenticate_api_key(session, new.key) is not None
    session.commit()
    new.api_key.revoked_at = utcnow()
    db.commit()
    assert authenticate_api_key(session, new.key) is None


def test_last_used_is_written_at_most_once_a_minute(session, db, lab):
    new = create_api_key(db, lab.id, "LIS", actor_id=None, ip=None)
    db.commit()
    authenticate_api_key(session, new.key)
    session.commit()
    first = reload(db, new.api_key.id).last_used_at
    assert first is not None and utcnow() - first < timedelta(seconds=5)

    recent = utcnow() - timedelta(seconds=50)
    reload(db, new.api_key.id).last_used_at = recent
    db.commit()
    assert authenticate_api_key(session, new.key).last_used_at == recent
    session.commit()
    assert reload(db, new.api_key.id).last_used_at == recent  # not rewritten

    old = utcnow() - timedelta(seconds=61)
    reload(db, new.api_key.id).last_used_at = old
    db.commit()
    touched = authenticate_api_key(session, new.key).last_used_at
    session.commit()
    assert touched > old and reload(db, new.api_key.id).last_used_at == touched


def test_list_shows_last_used_and_revoked(admin_client, session, db, lab):
    used = create_api_key(db, lab.id, "Used one", actor_id=None, ip=None)
    gone = create_api_key(db, lab.id, "Gone one", actor_id=None, ip=None)
    gone.api_key.revoked_at = utcnow()
    db.commit()
    authenticate_api_key(session, used.key)
    session.commit()
    page = admin_client.get("/admin/api-keys").get_data(as_text=True)
    used_row = page[page.index("Used one"):page.index("</tr>", page.index("Used one"))]
    gone_row = page[page.index("Gone one"):page.index("</tr>", page.index("Gone one"))]
    assert "Never" not in used_row and "Active" in used_row and "Revoke" in used_row
    assert "Revoked" in gone_row and "<button" not in gone_row


def test_revoke_needs_csrf_and_is_audited(admin_client, admin, session, db, lab):
    new = create_api_key(db, lab.id, "LIS", actor_id=None, ip=None)
    db.commit()
    url = f"/admin/api-keys/{new.api_key.id}/revoke"
    assert admin_client.post(url).status_code == 400  # no CSRF token
    assert reload(db, new.api_key.id).revoked_at is None

    token = csrf_from(admin_client.get("/admin/api-keys").get_data(as_text=True))
    response = admin_client.post(url, data={"csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"] == "/admin/api-keys"
    assert reload(db, new.api_key.id).revoked_at is not None
    assert authenticate_api_key(session, new.key) is None
    session.rollback()  # SQLite: no transaction held across the app's request
    assert admin_client.post(url, data={"csrf_token": token}).status_code == 303  # again: no-op
    entries = db.scalars(select(AuditLog).where(AuditLog.action == "api_key.revoke")).all()
    assert len(entries) == 1
    assert entries[0].user_id == admin.id and entries[0].object_id == str(new.api_key.id)
    assert entries[0].detail == {"name": "LIS", "prefix": new.api_key.prefix}


def test_another_labs_key_is_not_found_and_not_listed(admin_client, build, db):
    other = build.lab("other")
    theirs = create_api_key(db, other.id, "Their LIS", actor_id=None, ip=None)
    db.commit()
    token = csrf_from(admin_client.get("/admin/api-keys").get_data(as_text=True))
    response = admin_client.post(f"/admin/api-keys/{theirs.api_key.id}/revoke",
                                 data={"csrf_token": token})
    assert response.status_code == 404
    assert reload(db, theirs.api_key.id).revoked_at is None
    assert "Their LIS" not in admin_client.get("/admin/api-keys").get_data(as_text=True)


def test_cli_prints_the_key_once_on_stdout(app, session, db, lab):
    result = app.test_cli_runner().invoke(args=["api-key", "create", "acme", "Billing box"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert KEY.fullmatch(key)
    assert "not shown again" in result.stderr and key not in result.stderr
    row = authenticate_api_key(session, key)
    assert row is not None and (row.lab_id, row.name) == (lab.id, "Billing box")
    session.commit()
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "api_key.create"))
    assert entry.user_id is None and entry.detail["via"] == "cli"


@pytest.mark.parametrize("args, message", [
    (["api-key", "create", "nope", "X"], "No lab 'nope'"),
    (["api-key", "create", "acme", " "], "NAME must be 1 to 100 characters"),
])
def test_cli_refusals(app, lab, db, args, message):
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code != 0 and message in result.output
    assert db.scalar(select(ApiKey)) is None
