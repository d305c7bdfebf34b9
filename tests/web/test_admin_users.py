"""/admin/users: invite links, one-time passwords, roles, deactivation and the last admin."""

from __future__ import annotations

import html
import re
import time

import pytest
from argon2 import extract_parameters
from itsdangerous.timed import TimestampSigner
from sqlalchemy import select

from portal.models import AuditLog, Role, User
from portal.services import users
from portal.services.auth import hash_password, verify_password
from tests.conftest import csrf_from, sign_in

ISSUED = re.compile(r'id="issued-secret" type="text" readonly value="([^"]+)"')
NEW_PASSWORD = "a brand new passphrase"


def issued(response) -> str:
    match = ISSUED.search(response.get_data(as_text=True))
    assert match, "no one-time password or invite link on the page"
    return html.unescape(match.group(1))


def add_user(client, email: str, how: str, role: str = "staff", name: str = ""):
    token = csrf_from(client.get("/admin/users").get_data(as_text=True))
    return client.post("/admin/users", data={"csrf_token": token, "email": email,
                                             "name": name, "role": role, "how": how})


def post_form(client, page: str, action: str, **data):
    token = csrf_from(client.get(page).get_data(as_text=True))
    return client.post(action, data={"csrf_token": token, **data})


def set_password(client, url: str, password: str = NEW_PASSWORD, confirm: str | None = None):
    token = csrf_from(client.get(url).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, "password": password,
                                  "confirm": password if confirm is None else confirm})


def user_by_email(db, email: str) -> User:
    return db.scalar(select(User).where(User.email == email))


def actions(db) -> list[str]:
    return [a.action for a in db.scalars(select(AuditLog).order_by(AuditLog.id))]


# --- the list and adding people -----------------------------------------------------------

def test_list_shows_the_labs_users_only(admin_client, staff, build):
    other = build.lab("elsewhere")
    build.user(other, "stranger@elsewhere.test")
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert staff.email in page and "admin@acme.test" in page
    assert "stranger@elsewhere.test" not in page
    assert 'href="/admin/users"' in page  # the admin's nav


def test_invite_link_lets_the_person_choose_a_password_once(app, admin_client, db, lab):
    response = add_user(admin_client, "New.Person@Acme.test", "invite", name="New Person")
    assert response.status_code == 201  # rendered once, never redirected through the cookie
    url = issued(response)
    assert url.startswith("http://127.0.0.1:5000/invite?token=")
    user = user_by_email(db, "new.person@acme.test")
    assert (user.lab_id, user.role, user.name, user.active) == (lab.id, Role.STAFF,
                                                                "New Person", True)
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "user.create"))
    assert entry.detail == {"email": "new.person@acme.test", "role": "staff",
                            "access": "invite"}
    assert entry.user_id is not None and entry.ip_address == "127.0.0.1"
    assert "token" not in str(entry.detail)

    invitee = app.test_client()
    path = url.removeprefix("http://127.0.0.1:5000")
    page = invitee.get(path).get_data(as_text=True)
    assert "new.person@acme.test" in page and "Acme Diagnostics" in page
    assert set_password(invitee, path, confirm="something else").status_code == 422
    short = set_password(invitee, path, password="short")
    assert short.status_code == 422 and "at least 10 characters" in short.get_data(as_text=True)
    accepted = set_password(invitee, path)
    assert accepted.status_code == 303 and accepted.headers["Location"] == "/"
    assert invitee.get("/links").status_code == 200  # signed in
    assert verify_password(user_by_email(db, user.email).password_hash, NEW_PASSWORD)

    again = app.test_client().get(path)
    assert again.status_code == 410 and "expired or has been used" in again.get_data(True)
    assert sign_in(app.test_client(), user.email, NEW_PASSWORD).status_code == 302
    assert "user.password_set" in actions(db)


def test_invite_link_expires_after_72_hours(app, admin_client, db, monkeypatch):
    add_user(admin_client, "late@acme.test", "invite")
    user = user_by_email(db, "late@acme.test")
    secret = app.config["SECRET_KEY"]

    def signed_hours_ago(hours: float) -> str:
        with monkeypatch.context() as m:  # only while signing: the session cookie uses it too
            m.setattr(TimestampSigner, "get_timestamp",
                      lambda self: int(time.time() - hours * 3600))
            return users.invite_token(secret, user)

    client = app.test_client()
    assert client.get(f"/invite?token={signed_hours_ago(72.01)}").status_code == 410
    assert client.get(f"/invite?token={signed_hours_ago(71.9)}").status_code == 200


def test_forged_or_mangled_invite_is_refused(app, admin_client, db):
    url = issued(add_user(admin_client, "x@acme.test", "invite"))
    user = user_by_email(db, "x@acme.test")
    other_key = users.invite_token("not the app's secret", user)
    client = app.test_client()
    assert client.get(f"/invite?token={other_key}").status_code == 410
    assert client.get(url.removeprefix("http://127.0.0.1:5000")[:-3] + "abc").status_code == 410
    assert client.get("/invite").status_code == 410


def test_one_time_password_must_be_changed_at_first_sign_in(app, admin_client, db):
    response = add_user(admin_client, "desk2@acme.test", "password", role="admin")
    assert response.status_code == 201
    otp = issued(response)
    assert re.fullmatch(r"([a-z2-9]{4}-){3}[a-z2-9]{4}", otp)
    user = user_by_email(db, "desk2@acme.test")
    assert user.role == Role.ADMIN
    assert users.must_change_password(app.config["SECRET_KEY"], user)
    assert otp not in admin_client.get("/admin/users").get_data(as_text=True)  # shown once
    assert "Must change password" in admin_client.get("/admin/users").get_data(as_text=True)

    client = app.test_client()
    assert sign_in(client, user.email, otp).status_code == 302
    for path in ("/", "/links", "/admin/users"):
        moved = client.get(path)
        assert moved.status_code == 303 and moved.headers["Location"] == "/account/password"
    page = client.get("/account/password").get_data(as_text=True)
    assert "You signed in with a one-time password" in page
    assert "Current password" not in page
    same = set_password(client, "/account/password", password=otp)
    assert same.status_code == 422 and "not the one you signed in with" in same.get_data(True)
    done = set_password(client, "/account/password")
    assert done.status_code == 303
    assert client.get("/admin/users").status_code == 200
    assert not users.must_change_password(app.config["SECRET_KEY"], user_by_email(db, user.email))
    assert sign_in(app.test_client(), user.email, otp).status_code == 401
    entry = db.scalars(select(AuditLog).where(AuditLog.action == "user.password_set")).one()
    assert entry.detail == {"reason": "one-time password"} and entry.user_id == user.id


def test_signing_out_without_changing_keeps_the_duty(app, admin_client, db):
    otp = issued(add_user(admin_client, "later@acme.test", "password"))
    client = app.test_client()
    sign_in(client, "later@acme.test", otp)
    token = csrf_from(client.get("/account/password").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    sign_in(client, "later@acme.test", otp)
    assert client.get("/links").headers["Location"] == "/account/password"


def test_the_mark_is_bound_to_the_user_and_the_secret_key(app, db, lab, build):
    secret = app.config["SECRET_KEY"]
    a, b = build.user(lab, "a@acme.test"), build.user(lab, "b@acme.test")
    assert not users.must_change_password(secret, a)  # an ordinary Argon2 hash
    marked = users.hash_one_time_password(secret, a.id, "abcd-efgh-jkmn-pqrs")
    assert extract_parameters(marked) == extract_parameters(hash_password("x" * 12))
    assert verify_password(marked, "abcd-efgh-jkmn-pqrs")
    a.password_hash = b.password_hash = marked
    assert users.must_change_password(secret, a)
    assert not users.must_change_password(secret, b)  # copied to someone else: no mark
    assert not users.must_change_password("another secret key", a)
    a.password_hash = hash_password("abcd-efgh-jkmn-pqrs")  # same password, random salt
    assert not users.must_change_password(secret, a)
    a.password_hash = "!"
    assert not users.must_change_password(secret, a)


def test_voluntary_change_needs_the_current_password(staff_client, staff, db):
    page = staff_client.get("/account/password").get_data(as_text=True)
    assert "Current password" in page
    token = csrf_from(page)
    wrong = staff_client.post("/account/password", data={
        "csrf_token": token, "current": "not it at all", "password": NEW_PASSWORD,
        "confirm": NEW_PASSWORD})
    assert wrong.status_code == 422 and "not your current password" in wrong.get_data(True)
    from tests.conftest import PASSWORD
    ok = staff_client.post("/account/password", data={
        "csrf_token": token, "current": PASSWORD, "password": NEW_PASSWORD,
        "confirm": NEW_PASSWORD})
    assert ok.status_code == 303
    assert verify_password(user_by_email(db, staff.email).password_hash, NEW_PASSWORD)


@pytest.mark.parametrize("email, message", [
    ("staff@acme.test", "A user with this email exists already."),
    ("STAFF@acme.test ", "A user with this email exists already."),
    ("not-an-email", "Enter a valid email address."),
    ("", "Enter the person&#39;s email."),
])
def test_bad_new_user_is_refused_with_a_message(admin_client, staff, db, email, message):
    response = add_user(admin_client, email, "invite")
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert len(db.scalars(select(User)).all()) == 2


def test_bad_choices_are_refused(admin_client):
    assert add_user(admin_client, "a@acme.test", "telepathy").status_code == 422
    assert add_user(admin_client, "a@acme.test", "invite", role="owner").status_code == 422


# --- reset, roles, deactivation -----------------------------------------------------------

def test_reset_replaces_the_password_and_kills_older_invites(app, admin_client, staff, db):
    page = f"/admin/users/{staff.id}"
    first = issued(post_form(admin_client, page, f"{page}/reset", how="invite"))
    second = issued(post_form(admin_client, page, f"{page}/reset", how="invite"))
    client = app.test_client()
    assert client.get(first.removeprefix("http://127.0.0.1:5000")).status_code == 410
    assert client.get(second.removeprefix("http://127.0.0.1:5000")).status_code == 200
    assert sign_in(app.test_client(), staff.email).status_code == 401  # old password gone
    otp = issued(post_form(admin_client, page, f"{page}/reset", how="password"))
    assert client.get(second.removeprefix("http://127.0.0.1:5000")).status_code == 410
    assert sign_in(app.test_client(), staff.email, otp).status_code == 302
    assert actions(db).count("user.reset_access") == 3


def test_admin_cannot_reset_or_deactivate_themselves(admin_client, admin, db):
    page = f"/admin/users/{admin.id}"
    reset = post_form(admin_client, page, f"{page}/reset", how="password")
    assert reset.status_code == 409 and "Change password" in reset.get_data(as_text=True)
    build_second_admin = User(lab_id=admin.lab_id, email="second@acme.test", role=Role.ADMIN,
                              password_hash=hash_password("second admin pw"))
    db.add(build_second_admin)
    db.commit()
    response = post_form(admin_client, page, f"{page}/deactivate")
    assert response.status_code == 409
    assert "cannot deactivate your own account" in response.get_data(as_text=True)
    assert user_by_email(db, admin.email).active


def test_promote_and_demote(admin_client, staff, db):
    page = f"/admin/users/{staff.id}"
    response = post_form(admin_client, page, f"{page}/role", role="admin")
    assert response.status_code == 303
    assert user_by_email(db, staff.email).role == Role.ADMIN
    assert post_form(admin_client, page, f"{page}/role", role="staff").status_code == 303
    assert user_by_email(db, staff.email).role == Role.STAFF
    entries = db.scalars(select(AuditLog).where(AuditLog.action == "user.role_change")
                         .order_by(AuditLog.id)).all()
    assert [e.detail for e in entries] == [{"old": "staff", "new": "admin"},
                                           {"old": "admin", "new": "staff"}]
    assert all(e.object_id == str(staff.id) and e.ip_address for e in entries)


def test_promoted_staff_gets_the_admin_pages_at_once(staff_client, admin_client, staff):
    assert staff_client.get("/admin/users").status_code == 403
    page = f"/admin/users/{staff.id}"
    post_form(admin_client, page, f"{page}/role", role="admin")
    assert staff_client.get("/admin/users").status_code == 200


def test_the_last_admin_cannot_be_demoted(admin_client, admin, db):
    page = f"/admin/users/{admin.id}"
    response = post_form(admin_client, page, f"{page}/role", role="staff")
    assert response.status_code == 409
    assert "only active admin" in response.get_data(as_text=True)
    assert user_by_email(db, admin.email).role == Role.ADMIN
    assert "user.role_change" not in actions(db)


def test_a_deactivated_admin_does_not_count(admin_client, admin, build, lab, db):
    build.user(lab, "dormant@acme.test", role=Role.ADMIN, active=False)
    page = f"/admin/users/{admin.id}"
    assert post_form(admin_client, page, f"{page}/role", role="staff").status_code == 409


def test_with_two_admins_one_may_step_down_then_not_the_other(app, admin_client, admin, build,
                                                              lab, db):
    other = build.user(lab, "boss2@acme.test", role=Role.ADMIN)
    other_client = app.test_client()
    sign_in(other_client, other.email)
    page = f"/admin/users/{admin.id}"
    stepped = post_form(admin_client, page, f"{page}/role", role="staff")
    assert stepped.status_code == 303 and stepped.headers["Location"] == "/"
    assert admin_client.get("/admin/users").status_code == 403
    own = f"/admin/users/{other.id}"
    assert post_form(other_client, own, f"{own}/role", role="staff").status_code == 409
    assert post_form(other_client, page, f"{page}/role", role="admin").status_code == 303


def test_service_refuses_last_admin_changes(app, db, lab, admin, staff):
    for change in (lambda: users.change_role(db, lab.id, admin.id, Role.STAFF, actor_id=None,
                                             ip=None),
                   lambda: users.deactivate(db, lab.id, admin.id, actor_id=None, ip=None)):
        with pytest.raises(users.LastAdminError):
            change()
        db.rollback()
    assert users.deactivate(db, lab.id, staff.id, actor_id=admin.id, ip=None).active is False
    db.rollback()


def test_deactivate_ends_sessions_and_reactivation_gives_a_new_way_in(
        app, admin_client, staff_client, staff, db):
    page = f"/admin/users/{staff.id}"
    assert staff_client.get("/links").status_code == 200
    response = post_form(admin_client, page, f"{page}/deactivate")
    assert response.status_code == 303
    assert user_by_email(db, staff.email).active is False
    assert staff_client.get("/links").status_code == 302  # back to the login page
    assert sign_in(app.test_client(), staff.email).status_code == 401
    assert "Deactivated" in admin_client.get("/admin/users").get_data(as_text=True)

    back = post_form(admin_client, page, f"{page}/reactivate", how="password")
    assert back.status_code == 200
    otp = issued(back)
    assert user_by_email(db, staff.email).active is True
    # The old cookie does not come back to life, nor does the old password.
    assert staff_client.get("/links").status_code == 302
    assert sign_in(app.test_client(), staff.email).status_code == 401
    assert sign_in(app.test_client(), staff.email, otp).status_code == 302
    assert actions(db)[-3:] == ["user.deactivate", "user.reactivate", "user.login"]


def test_a_new_password_ends_the_users_other_sessions(app, staff, db):
    from tests.conftest import PASSWORD

    here, elsewhere = app.test_client(), app.test_client()
    sign_in(here, staff.email)
    sign_in(elsewhere, staff.email)
    token = csrf_from(here.get("/account/password").get_data(as_text=True))
    assert here.post("/account/password", data={
        "csrf_token": token, "current": PASSWORD, "password": NEW_PASSWORD,
        "confirm": NEW_PASSWORD}).status_code == 303
    assert here.get("/links").status_code == 200
    assert elsewhere.get("/links").status_code == 302


def test_another_labs_user_is_not_found(admin_client, build, db):
    other = build.user(build.lab("far"), "far@far.test", role=Role.ADMIN)
    token = csrf_from(admin_client.get("/admin/users").get_data(as_text=True))
    assert admin_client.get(f"/admin/users/{other.id}").status_code == 404
    for action, data in (("role", {"role": "staff"}), ("deactivate", {}),
                         ("reactivate", {"how": "invite"}), ("reset", {"how": "password"})):
        response = admin_client.post(f"/admin/users/{other.id}/{action}",
                                     data={"csrf_token": token, **data})
        assert response.status_code == 404, action
    far = user_by_email(db, "far@far.test")
    assert (far.role, far.active) == (Role.ADMIN, True)


def test_forms_need_the_csrf_token(admin_client, staff, db):
    assert admin_client.post("/admin/users", data={"email": "x@acme.test", "role": "staff",
                                                   "how": "invite"}).status_code == 400
    assert admin_client.post(f"/admin/users/{staff.id}/deactivate").status_code == 400
    assert user_by_email(db, staff.email).active
