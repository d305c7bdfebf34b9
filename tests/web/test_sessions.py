"""Server-side staff sessions: sign-out, "all devices", an admin, a new password or deactivation
end them; idle and absolute limits hold on the server; patient pages never get one."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select

from portal.models import ApiKey, AuditLog, StaffSession, User, utcnow
from portal.services import users
from portal.services.staff_sessions import describe_device
from tests.conftest import PASSWORD, csrf_from, sign_in
from tests.web.helpers import start_payment

COOKIE = "portal_session"
SIGNED_OUT = "You were signed out. Please sign in again."


def stolen_cookie(client) -> str:
    return client.get_cookie(COOKIE).value


def replay(app, cookie: str):
    """Another browser (the same address and user agent) presenting a copied cookie."""
    thief = app.test_client()
    thief.set_cookie(COOKIE, cookie)
    return thief


def cookie_data(app, cookie: str) -> dict:
    return app.session_interface.get_signing_serializer(app).loads(cookie)


def post(client, page: str, action: str, **data):
    token = csrf_from(client.get(page).get_data(as_text=True))
    return client.post(action, data={"csrf_token": token, **data})


def rows_of(db, user) -> list[StaffSession]:
    return list(db.scalars(select(StaffSession).where(StaffSession.user_id == user.id)
                           .order_by(StaffSession.id)))


def login_page_says(client, response, message: str) -> None:
    assert response.status_code in (302, 303)
    assert response.headers["Location"].startswith("/login")
    assert message in client.get(response.headers["Location"]).get_data(as_text=True)


class Clock:
    def __init__(self, monkeypatch):
        self.now = utcnow()
        monkeypatch.setattr("portal.auth.sessions.utcnow", lambda: self.now)

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


@pytest.fixture
def statements(app):
    """Every SQL statement the app's engine runs, from the moment this fixture is used."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        seen.append(statement)

    engine = app.extensions["portal_db"].engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


# --- sign-out ------------------------------------------------------------------------------

def test_a_cookie_copied_before_sign_out_is_refused_afterwards(app, admin_client, admin, db):
    token = csrf_from(admin_client.get("/admin/api-keys").get_data(as_text=True))
    cookie = stolen_cookie(admin_client)
    assert replay(app, cookie).get("/admin/api-keys").status_code == 200  # a live copy works

    assert admin_client.post("/logout", data={"csrf_token": token}).status_code == 302

    # The copy with its valid CSRF token cannot make a key any more.
    thief = replay(app, cookie)
    response = thief.post("/admin/api-keys", data={"csrf_token": token, "name": "backdoor"})
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert db.scalar(select(func.count()).select_from(ApiKey)) == 0
    assert SIGNED_OUT in thief.get("/login").get_data(as_text=True)
    # A page sends it to sign in; anything JSON gets 401.
    response = replay(app, cookie).get("/admin/api-keys")
    assert response.headers["Location"] == "/login?next=%2Fadmin%2Fapi-keys"
    response = replay(app, cookie).get("/links", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "session_ended"
    assert [r.revoked_at is not None for r in rows_of(db, admin)] == [True]


def test_a_refused_cookie_is_emptied(app, staff_client, staff):
    cookie = stolen_cookie(staff_client)
    post(staff_client, "/links", "/logout")
    thief = replay(app, cookie)
    thief.get("/links")
    assert not {"_user_id", "sid", "password_fp"} & set(cookie_data(app, stolen_cookie(thief)))


def test_sign_out_forgets_the_whole_cookie(app, staff_client):
    post(staff_client, "/links", "/logout")
    assert set(cookie_data(app, stolen_cookie(staff_client))) <= {"_flashes"}


def test_the_cookie_holds_a_random_id_and_the_table_only_its_hash(app, staff_client, staff, db):
    raw = cookie_data(app, stolen_cookie(staff_client))["sid"]
    assert len(raw) >= 43  # 32 random bytes, base64
    [row] = rows_of(db, staff)
    assert row.token_hash == hashlib.sha256(raw.encode()).hexdigest() != raw
    assert row.ip == "127.0.0.1" and row.revoked_at is None


def test_each_sign_in_is_its_own_session(app, staff, db):
    one, two = app.test_client(), app.test_client()
    sign_in(one, staff.email)
    sign_in(two, staff.email)
    post(one, "/links", "/logout")
    assert one.get("/links").status_code == 302
    assert two.get("/links").status_code == 200
    assert [r.revoked_at is None for r in rows_of(db, staff)] == [False, True]


def test_a_forged_session_id_is_refused(app, staff_client):
    from flask.sessions import SecureCookieSessionInterface

    data = cookie_data(app, stolen_cookie(staff_client))
    data["sid"] = "x" * 43
    forged = SecureCookieSessionInterface().get_signing_serializer(app).dumps(data)
    assert replay(app, forged).get("/links").status_code == 302


def test_signing_in_as_someone_else_ends_this_browsers_session(app, admin_client, admin,
                                                                staff, db):
    invite = f"/invite?token={users.invite_token(app.config['SECRET_KEY'], staff)}"
    copy = stolen_cookie(admin_client)
    new = "a brand new passphrase"
    assert post(admin_client, invite, invite, password=new, confirm=new).status_code == 303
    assert admin_client.get("/account").get_data(as_text=True).count(staff.email) >= 1
    assert replay(app, copy).get("/links").status_code == 302
    assert [r.revoked_at is not None for r in rows_of(db, admin)] == [True]


# --- all devices, from the user's own page and by an admin -------------------------------

def test_sign_out_of_all_other_devices_ends_the_first_session(app, staff, db):
    first, second = app.test_client(), app.test_client()
    sign_in(first, staff.email)
    sign_in(second, staff.email)
    copy_of_second = stolen_cookie(second)
    assert "(this device)" in second.get("/account").get_data(as_text=True)

    response = post(second, "/account", "/account/sign-out-others")
    assert response.status_code == 303 and response.headers["Location"] == "/account"

    login_page_says(first, first.get("/links"), SIGNED_OUT)
    assert second.get("/links").status_code == 200  # this browser stays signed in...
    assert replay(app, copy_of_second).get("/links").status_code == 302  # ...under a new id
    assert [r.revoked_at is None for r in rows_of(db, staff)] == [False, False, True]
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "user.sessions_revoked"))
    assert (entry.user_id, entry.object_id, entry.detail["scope"]) == (staff.id, str(staff.id),
                                                                       "self")


def test_the_account_page_lists_the_open_sessions(app, staff, db):
    phone = app.test_client()
    phone.environ_base["HTTP_USER_AGENT"] = (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0 Mobile Safari/537.36")
    sign_in(phone, staff.email)
    desk = app.test_client()
    sign_in(desk, staff.email)
    page = desk.get("/account").get_data(as_text=True)
    assert "Chrome on Android" in page and "(this device)" in page
    post(phone, "/links", "/logout")
    assert "Chrome on Android" not in desk.get("/account").get_data(as_text=True)


def test_an_admin_signs_another_user_out_everywhere(app, admin_client, admin, staff_client,
                                                     staff, db):
    page = f"/admin/users/{staff.id}"
    assert "Sign staff@acme.test out of all devices" in admin_client.get(page).get_data(
        as_text=True)
    response = post(admin_client, page, f"{page}/sign-out")
    assert response.status_code == 303 and response.headers["Location"] == page
    assert "signed out on every device" in admin_client.get(page).get_data(as_text=True)

    login_page_says(staff_client, staff_client.get("/links"), SIGNED_OUT)
    assert admin_client.get("/admin/users").status_code == 200  # the admin's own goes on
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "user.sessions_revoked"))
    assert (entry.lab_id, entry.user_id, entry.object_id) == (admin.lab_id, admin.id,
                                                              str(staff.id))
    assert entry.detail == {"scope": "admin", "sessions": 1}
    assert sign_in(app.test_client(), staff.email).status_code == 302  # the password stands


def test_the_admin_action_is_lab_scoped_csrf_checked_and_not_for_oneself(
        app, admin_client, admin, build, db):
    far_lab = build.lab("far")
    far = build.user(far_lab, "far@far.test")
    far_client = app.test_client()
    sign_in(far_client, far.email)
    token = csrf_from(admin_client.get("/admin/users").get_data(as_text=True))

    assert admin_client.post(f"/admin/users/{far.id}/sign-out",
                             data={"csrf_token": token}).status_code == 404
    assert admin_client.post(f"/admin/users/{far.id}/sign-out").status_code == 400
    assert far_client.get("/links").status_code == 200
    own = admin_client.post(f"/admin/users/{admin.id}/sign-out", data={"csrf_token": token})
    assert own.status_code == 409 and "Your account" in own.get_data(as_text=True)
    assert admin_client.get("/admin/users").status_code == 200
    assert db.scalar(select(func.count()).select_from(AuditLog).where(
        AuditLog.action == "user.sessions_revoked")) == 0


def test_staff_cannot_sign_others_out(staff_client, admin, admin_client):
    response = post(staff_client, "/links", f"/admin/users/{admin.id}/sign-out")
    assert response.status_code == 403
    assert admin_client.get("/admin/users").status_code == 200


# --- a new password, a reset and deactivation revoke the rows ----------------------------

def test_changing_ones_password_revokes_every_other_session(app, staff, db):
    here, elsewhere = app.test_client(), app.test_client()
    sign_in(here, staff.email)
    sign_in(elsewhere, staff.email)
    copy_of_here = stolen_cookie(here)
    new = "a brand new passphrase"
    response = post(here, "/account/password", "/account/password", current=PASSWORD,
                    password=new, confirm=new)
    assert response.status_code == 303
    assert here.get("/links").status_code == 200
    assert elsewhere.get("/links").status_code == 302
    assert replay(app, copy_of_here).get("/links").status_code == 302
    # Revoked on the server, not only by the password fingerprint in the cookie.
    assert [r.revoked_at is None for r in rows_of(db, staff)] == [False, False, True]


@pytest.mark.parametrize("action, data", [("reset", {"how": "password"}), ("deactivate", {})])
def test_a_reset_or_deactivation_revokes_every_session(app, admin_client, staff_client, staff,
                                                       db, action, data):
    page = f"/admin/users/{staff.id}"
    assert post(admin_client, page, f"{page}/{action}", **data).status_code in (200, 303)
    assert staff_client.get("/links").status_code == 302
    assert [r.revoked_at is not None for r in rows_of(db, staff)] == [True]


def test_a_deactivated_users_live_row_lets_nobody_in(app, staff_client, staff, db):
    """Even a row nobody revoked: the user's `active` is checked on every request."""
    user = db.get(User, staff.id)
    user.active = False
    db.commit()
    assert staff_client.get("/links").status_code == 302


# --- idle and absolute limits, on the server -----------------------------------------------

def test_idle_sessions_end(app, staff, clock):
    client = app.test_client()
    sign_in(client, staff.email)
    for _ in range(3):  # active every 29 minutes: never idle
        clock.advance(minutes=29)
        assert client.get("/links").status_code == 200
    clock.advance(minutes=30)
    login_page_says(client, client.get("/links"),
                    "You were signed out after 30 minutes without activity.")
    clock.advance(seconds=1)
    assert client.get("/links").status_code == 302  # and stays out


def test_sessions_end_after_their_absolute_lifetime(app, staff, clock):
    client = app.test_client()
    sign_in(client, staff.email)
    for _ in range(35):  # 11 h 40 min, busy all along
        clock.advance(minutes=20)
        assert client.get("/links").status_code == 200
    clock.advance(minutes=20)
    login_page_says(client, client.get("/links"),
                    "You were signed out: a session lasts at most 12 hours.")


def test_the_limits_are_configurable(app, staff, clock):
    app.config.update(PORTAL_SESSION_IDLE_MINUTES=5, PORTAL_SESSION_MAX_HOURS=1)
    client = app.test_client()
    sign_in(client, staff.email)
    clock.advance(minutes=5)
    response = client.get("/links", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert "after 5 minutes without activity" in response.get_json()["error"]["message"]


def test_last_seen_is_written_at_most_once_a_minute(app, staff_client, staff, db, clock,
                                                    statements):
    def writes() -> int:
        return sum(1 for s in statements if s.lstrip().upper().startswith("UPDATE STAFF_SESSIONS"))

    for _ in range(5):
        clock.advance(seconds=10)
        assert staff_client.get("/links").status_code == 200
    assert writes() == 0
    clock.advance(seconds=20)  # a minute since sign-in
    staff_client.get("/links")
    staff_client.get("/links")
    assert writes() == 1
    [row] = rows_of(db, staff)
    assert row.last_seen_at == clock.now


def test_settings_come_from_the_environment(tmp_path):
    from portal.config import load_settings

    env = {"PORTAL_SECRET_KEY": "k", "PORTAL_ENCRYPTION_KEYS": "x"}
    defaults = load_settings(str(tmp_path), env)
    assert (defaults["PORTAL_SESSION_IDLE_MINUTES"], defaults["PORTAL_SESSION_MAX_HOURS"]) == \
        (30, 12)
    chosen = load_settings(str(tmp_path), {**env, "PORTAL_SESSION_IDLE_MINUTES": "15",
                                           "PORTAL_SESSION_MAX_HOURS": "8"})
    assert (chosen["PORTAL_SESSION_IDLE_MINUTES"], chosen["PORTAL_SESSION_MAX_HOURS"]) == (15, 8)
    for bad in ("0", "-5", "nan", "inf", "soon"):
        with pytest.raises(ValueError):
            load_settings(str(tmp_path), {**env, "PORTAL_SESSION_IDLE_MINUTES": bad})


# --- patient pages: no session row, no write -------------------------------------------------

def test_the_patient_pay_page_creates_no_session_row(client, build, lab, db, statements):
    link = build.link(lab)
    assert client.get(f"/pay/{link.token}").status_code == 200
    start_payment(client, link)
    assert client.get(f"/pay/{link.token}/status.json").status_code == 200
    assert not [s for s in statements if "staff_sessions" in s]
    assert db.scalar(select(func.count()).select_from(StaffSession)) == 0
    assert client.get_cookie(COOKIE) is None  # the Pay form's token needs no session


def test_a_signed_in_staff_opening_a_pay_page_writes_nothing_for_it(staff_client, build, lab,
                                                                     clock, statements):
    link = build.link(lab)
    clock.advance(minutes=5)  # a write would be due on a staff page
    assert staff_client.get(f"/pay/{link.token}").status_code == 200
    # (Flask-Login's template context reads the user; nothing is written for it.)
    assert not [s for s in statements if "staff_sessions" in s
                and s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


# --- the device summary --------------------------------------------------------------------

@pytest.mark.parametrize("agent, expected", [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", "Chrome on Windows"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51", "Edge on Windows"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     "like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", "Safari on iPhone"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0",
     "Firefox on macOS"),
    ("curl/8.5.0", "Unknown browser"),
    (None, "Unknown browser"),
])
def test_device_names(agent, expected):
    assert describe_device(agent) == expected
