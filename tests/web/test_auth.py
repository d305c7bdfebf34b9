from sqlalchemy import select

from portal.models import AuditLog, LoginThrottle
from tests.conftest import PASSWORD, csrf_from, sign_in

GENERIC = "That email and password do not match an active account."


def test_sign_in_and_out(client, staff):
    response = sign_in(client, staff.email)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert client.get("/links").status_code == 200
    token = csrf_from(client.get("/links").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/links").status_code == 302  # back to the login page


def test_pages_need_login(client):
    response = client.get("/links")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_wrong_email_and_wrong_password_get_the_same_answer(client, staff):
    wrong_password = sign_in(client, staff.email, "not the password")
    wrong_email = sign_in(client, "nobody@acme.test", PASSWORD)
    assert wrong_password.status_code == wrong_email.status_code == 401
    assert GENERIC in wrong_password.get_data(as_text=True)
    assert GENERIC in wrong_email.get_data(as_text=True)


def test_inactive_user_cannot_sign_in(client, build, lab):
    user = build.user(lab, "gone@acme.test", active=False)
    assert sign_in(client, user.email).status_code == 401


def test_email_is_case_insensitive(client, staff):
    assert sign_in(client, staff.email.upper()).status_code == 302


def test_repeated_failures_lock_the_account_for_a_while(app, client, staff, db):
    for _ in range(app.config["PORTAL_LOGIN_MAX_FAILURES"]):
        assert sign_in(client, staff.email, "wrong password!").status_code == 401
    locked = sign_in(client, staff.email)  # even the right password is refused now
    assert locked.status_code == 429
    assert "Too many failed sign-ins. Try again in 15 minutes." in locked.get_data(as_text=True)
    throttle = db.get(LoginThrottle, f"email:{staff.email}")
    assert throttle.locked_until is not None


def test_lock_is_per_account(app, client, build, lab, staff):
    other = build.user(lab, "other@acme.test")
    for _ in range(app.config["PORTAL_LOGIN_MAX_FAILURES"]):
        sign_in(client, staff.email, "wrong password!")
    assert sign_in(client, other.email).status_code == 302


def test_one_address_trying_many_accounts_is_locked(app, client, staff):
    limit = app.config["PORTAL_LOGIN_MAX_FAILURES"] * 4
    for i in range(limit):
        sign_in(client, f"guess{i}@acme.test", "wrong password!")
    assert sign_in(client, staff.email).status_code == 429


def test_lock_expires(app, client, staff, db):
    from datetime import timedelta

    from portal.models import utcnow

    for _ in range(app.config["PORTAL_LOGIN_MAX_FAILURES"]):
        sign_in(client, staff.email, "wrong password!")
    throttle = db.get(LoginThrottle, f"email:{staff.email}")
    throttle.locked_until = utcnow() - timedelta(seconds=1)
    db.commit()
    assert sign_in(client, staff.email).status_code == 302


def test_next_stays_on_the_site(client, staff):
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"csrf_token": token, "email": staff.email,
                                           "password": PASSWORD,
                                           "next": "https://evil.example/phish"})
    assert response.headers["Location"] == "/"


def test_next_within_the_site_is_followed(client, staff):
    token = csrf_from(client.get("/login?next=/links/new").get_data(as_text=True))
    page = client.get("/login?next=/links/new").get_data(as_text=True)
    assert 'value="/links/new"' in page
    response = client.post("/login", data={"csrf_token": token, "email": staff.email,
                                           "password": PASSWORD, "next": "/links/new"})
    assert response.headers["Location"] == "/links/new"


def test_form_without_csrf_token_is_refused(client, staff):
    response = client.post("/login", data={"email": staff.email, "password": PASSWORD})
    assert response.status_code == 400
    assert "This form has expired" in response.get_data(as_text=True)


def test_session_cookie_flags(client, staff):
    response = sign_in(client, staff.email)
    cookie = [h for h in response.headers.getlist("Set-Cookie")
              if h.startswith("portal_session=")][0]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # http base URL in tests


def test_secure_cookie_when_base_url_is_https(tmp_path):
    from portal.config import load_settings

    settings = load_settings(str(tmp_path), {"PORTAL_BASE_URL": "https://pay.example.com"})
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["REMEMBER_COOKIE_SECURE"] is True


def test_sign_in_is_audited(client, staff, db):
    sign_in(client, staff.email)
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "user.login"))
    assert entry.user_id == staff.id and entry.ip_address == "127.0.0.1"


def test_security_headers(client):
    response = client.get("/login")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
