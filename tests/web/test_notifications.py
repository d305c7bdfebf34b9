"""The outbox: links, resends and receipts reach patients by email (real SMTP) and SMS (fakes)."""

from __future__ import annotations

import base64
import logging
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from portal.models import Channel, Job, LinkStatus, Notification, OutboxStatus, Role, utcnow
from portal.services.links import NewLink, create_link
from portal.services.notifications import SEND_ATTEMPTS
from portal.worker import runner
from tests.conftest import csrf_from, sign_in
from tests.fakes.certs import self_signed_certificate
from tests.fakes.sms_fakes import FakeSmsProvider, FakeTwilio
from tests.fakes.smtp import SmtpServer, free_port
from tests.web.helpers import post_event, start_payment
from tests.web.test_links import form as link_form

SID, AUTH_TOKEN = "AC" + "1" * 32, "twilio-auth-token-never-logged"


def run_jobs(app) -> None:
    runner.wait_idle(app)


def our_logs(caplog) -> str:
    """Everything logged but by the test's own SMTP server (which logs what it receives)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))


def notifications(db, **where) -> list[Notification]:
    query = select(Notification).order_by(Notification.id)
    for name, value in where.items():
        query = query.where(getattr(Notification, name) == value)
    return list(db.scalars(query))


def make_due(db) -> None:
    """Every queued job due now: stands in for waiting out the backoff."""
    for job in db.scalars(select(Job).where(Job.status == OutboxStatus.QUEUED)):
        job.run_at = utcnow()
    db.commit()


def send_link(db, lab, channels=("email", "sms"), **fields):
    data = NewLink(patient_name="Asha Rao", phone=fields.pop("phone", "+919876543210"),
                   email=fields.pop("email", "asha@example.com"), amount=123450,
                   currency="INR", bill_reference=fields.pop("bill_reference", "B-1001"),
                   description=fields.pop("description", "HbA1c, lipid profile"),
                   expires_at=fields.pop("expires_at", utcnow() + timedelta(hours=72)),
                   notify=tuple(channels))
    link = create_link(db, lab, data, user_id=None)
    db.commit()
    return link


# --- the new-link form and the outbox transaction ---------------------------------------------

def test_creating_a_link_with_send_ticked_queues_one_message_per_channel(staff_client, db):
    data = link_form(staff_client, send_sms="y", send_email="y")
    response = staff_client.post("/links/new", data=data, follow_redirects=True)
    assert "Payment link created. Sending it by SMS and email." in response.get_data(as_text=True)
    rows = notifications(db)
    assert [(n.channel, n.recipient, n.template, n.status) for n in rows] == [
        (Channel.SMS, "+919876543210", "link", OutboxStatus.QUEUED),
        (Channel.EMAIL, "asha@example.com", "link", OutboxStatus.QUEUED)]
    sends = list(db.scalars(select(Job).where(Job.kind == "notification.send")))
    assert sorted(j.payload["notification_id"] for j in sends) == [n.id for n in rows]
    assert all(j.max_attempts == SEND_ATTEMPTS for j in sends)


def test_the_form_offers_sending_ticked(staff_client):
    page = staff_client.get("/links/new").get_data(as_text=True)
    assert '<input checked id="send_sms" name="send_sms" type="checkbox" value="y">' in page
    assert '<input checked id="send_email" name="send_email" type="checkbox" value="y">' in page


def test_unticked_boxes_or_a_missing_contact_send_nothing_there(staff_client, db):
    staff_client.post("/links/new", data=link_form(staff_client))  # nothing ticked
    assert notifications(db) == []
    response = staff_client.post("/links/new", data=link_form(
        staff_client, email="", send_sms="y", send_email="y", bill_reference="B-2"),
        follow_redirects=True)
    assert "Payment link created. Sending it by SMS." in response.get_data(as_text=True)
    assert [n.channel for n in notifications(db)] == [Channel.SMS]


def test_a_rolled_back_link_leaves_no_message_behind(app, db, lab):
    data = NewLink(patient_name="Asha Rao", phone="+919876543210", email="asha@example.com",
                   amount=500, currency="INR", bill_reference="B-9", description="",
                   expires_at=utcnow() + timedelta(hours=72), notify=("email", "sms"))
    session = app.extensions["portal_db"].session_factory()
    create_link(session, session.merge(lab), data, user_id=None)
    session.flush()
    assert session.scalar(select(func.count()).select_from(Notification)) == 2
    session.rollback()
    session.close()
    assert db.scalar(select(func.count()).select_from(Notification)) == 0
    assert db.scalar(select(func.count()).select_from(Job)) == 0


# --- email over a real SMTP server ------------------------------------------------------------

def test_email_round_trip_through_a_real_smtp_server(app, db, lab, caplog):
    caplog.set_level(logging.DEBUG)
    with SmtpServer() as smtp:
        app.config.update(PORTAL_SMTP_URL=f"smtp://127.0.0.1:{smtp.port}",
                          PORTAL_MAIL_FROM="payments@acme.test")
        link = send_link(db, lab, channels=["email"])
        run_jobs(app)
    [got] = smtp.received
    message = got.message
    assert got.mail_from == "payments@acme.test" and got.rcpt_tos == ["asha@example.com"]
    assert message["From"] == "Acme Diagnostics <payments@acme.test>"
    assert message["To"] == "Asha Rao <asha@example.com>"
    assert message["Subject"] == "Payment link for bill B-1001 from Acme Diagnostics"
    [row] = notifications(db)
    assert message["Message-ID"] == f"<notification-{row.id}@acme.test>"
    assert message["Auto-Submitted"] == "auto-generated" and message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.iter_parts()
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    url = f"http://127.0.0.1:5000/pay/{link.token}"
    text = plain.get_content()
    assert "Amount due: ₹1,234.50" in text and "bill B-1001" in text and url in text
    assert f'<a href="{url}"' in html.get_content() and "Acme Diagnostics" in html.get_content()
    for part in (text, html.get_content()):
        assert "HbA1c" not in part and "lipid" not in part
    assert (row.status, row.attempts, row.last_error) == (OutboxStatus.DONE, 1, None)
    assert row.sent_at is not None
    assert link.token not in our_logs(caplog)


def test_starttls_and_auth(app, db, lab, tmp_path, monkeypatch):
    cert, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts our self-signed CA
    with SmtpServer(tls="starttls", cert=(cert, key), users={"mailer@acme.test": "s3cret:pw"}
                    ) as smtp:
        app.config["PORTAL_SMTP_URL"] = (f"smtp://mailer%40acme.test:s3cret%3Apw@127.0.0.1:"
                                         f"{smtp.port}?starttls=1")
        send_link(db, lab, channels=["email"])
        run_jobs(app)
    [got] = smtp.received
    assert got.login == "mailer@acme.test"
    assert notifications(db)[0].status == OutboxStatus.DONE


def test_implicit_tls_smtps(app, db, lab, tmp_path, monkeypatch):
    cert, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with SmtpServer(tls="implicit", cert=(cert, key), users={"mailer": "pw"}) as smtp:
        app.config["PORTAL_SMTP_URL"] = f"smtps://mailer:pw@127.0.0.1:{smtp.port}"
        send_link(db, lab, channels=["email"])
        run_jobs(app)
    assert [r.login for r in smtp.received] == ["mailer"]


def test_an_untrusted_certificate_is_not_accepted(app, db, lab, tmp_path):
    cert, key = self_signed_certificate(tmp_path)  # SSL_CERT_FILE not set: the system CAs only
    with SmtpServer(tls="starttls", cert=(cert, key)) as smtp:
        app.config["PORTAL_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}?starttls=1"
        send_link(db, lab, channels=["email"])
        run_jobs(app)
    assert smtp.received == []
    [row] = notifications(db)
    assert row.status == OutboxStatus.QUEUED and "CERTIFICATE_VERIFY_FAILED" in row.last_error


def test_wrong_smtp_password_is_retried_not_sent(app, db, lab, tmp_path, monkeypatch):
    cert, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with SmtpServer(tls="starttls", cert=(cert, key), users={"mailer": "pw"}) as smtp:
        app.config["PORTAL_SMTP_URL"] = f"smtp://mailer:wrong@127.0.0.1:{smtp.port}?starttls=1"
        send_link(db, lab, channels=["email"])
        run_jobs(app)
    [row] = notifications(db)
    assert smtp.received == [] and row.status == OutboxStatus.QUEUED
    assert row.last_error.startswith("SMTP 535") and "wrong" not in row.last_error


def test_smtp_down_retries_with_backoff_then_dead_and_staff_see_why(app, db, lab, build):
    app.config["PORTAL_SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"  # nobody listens
    link = send_link(db, lab, channels=["email"])
    run_jobs(app)
    [row] = notifications(db)
    assert (row.status, row.attempts) == (OutboxStatus.QUEUED, 1)
    assert "ConnectionRefusedError" in row.last_error
    assert timedelta(seconds=2) < row.next_attempt_at - utcnow() <= timedelta(seconds=5)
    client = app.test_client()
    sign_in(client, build.user(lab, "desk@acme.test").email)
    page = client.get(f"/links/{link.id}").get_data(as_text=True)
    assert "Retrying" in page and "Next try" in page
    for _ in range(SEND_ATTEMPTS - 1):
        make_due(db)
        run_jobs(app)
    [row] = notifications(db)
    assert (row.status, row.attempts) == (OutboxStatus.DEAD, SEND_ATTEMPTS)
    job = db.scalar(select(Job).where(Job.kind == "notification.send"))
    assert job.status == OutboxStatus.DEAD
    make_due(db)
    run_jobs(app)  # nothing more is tried
    assert notifications(db)[0].attempts == SEND_ATTEMPTS

    page = client.get(f"/links/{link.id}").get_data(as_text=True)
    assert "Messages to the patient" in page and "Failed" in page and "Retrying" not in page
    assert "could not be delivered" in page and "SMTP" not in page  # plain words for the desk
    admin = app.test_client()
    sign_in(admin, build.user(lab, "boss@acme.test", role=Role.ADMIN).email)
    page = admin.get(f"/links/{link.id}").get_data(as_text=True)
    assert ("<summary>Technical details</summary><div>Last error: SMTP: ConnectionRefusedError"
            in page)


def test_a_refused_recipient_is_dead_at_once(app, db, lab):
    with SmtpServer() as smtp:
        smtp.recorder.refuse.add("asha@example.com")
        app.config["PORTAL_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}"
        send_link(db, lab, channels=["email"])
        run_jobs(app)
    [row] = notifications(db)
    assert (row.status, row.attempts) == (OutboxStatus.DEAD, 1)
    assert "refused the recipient: 550 5.1.1 No such mailbox here" in row.last_error


def test_without_smtp_url_mail_is_logged_with_the_token_cut_short(app, db, lab, caplog):
    caplog.set_level(logging.INFO)
    app.config["PORTAL_SMTP_URL"] = None
    link = send_link(db, lab, channels=["email"])
    run_jobs(app)
    [row] = notifications(db)
    assert (row.status, row.sent_at, row.last_error) == (
        OutboxStatus.DONE, None, "Logged only: no mail server is set up (PORTAL_SMTP_URL).")
    assert "PORTAL_SMTP_URL not set" in caplog.text and "a***@example.com" in caplog.text
    assert f"/pay/{link.token[:6]}…" in caplog.text and link.token not in caplog.text


# --- SMS backends -----------------------------------------------------------------------------

def test_console_sms_is_logged_with_phone_and_token_masked(app, db, lab, caplog):
    caplog.set_level(logging.INFO)
    link = send_link(db, lab, channels=["sms"])
    run_jobs(app)
    [row] = notifications(db)
    assert (row.status, row.sent_at, row.last_error) == (
        OutboxStatus.DONE, None,
        "Logged only: no SMS provider is set up (PORTAL_SMS_BACKEND is console).")
    assert "SMS (console backend, not sent) to +91******3210" in caplog.text
    assert "please pay INR 1,234.50 for bill B-1001" in caplog.text
    assert link.token not in caplog.text and "9876543210" not in caplog.text


def twilio_config(app, fake, sender="+15005550006"):
    app.config.update(PORTAL_SMS_BACKEND="twilio", PORTAL_TWILIO_ACCOUNT_SID=SID,
                      PORTAL_TWILIO_AUTH_TOKEN=AUTH_TOKEN, PORTAL_TWILIO_FROM=sender,
                      PORTAL_TWILIO_API_BASE=fake.url)


def test_twilio_gets_the_exact_request(app, db, lab, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeTwilio(SID, AUTH_TOKEN) as fake:
        twilio_config(app, fake)
        link = send_link(db, lab, channels=["sms"])
        run_jobs(app)
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", f"/2010-04-01/Accounts/{SID}/Messages.json")
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(
        f"{SID}:{AUTH_TOKEN}".encode()).decode()
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "To": "+919876543210", "From": "+15005550006",
        "Body": ("Acme Diagnostics: please pay INR 1,234.50 for bill B-1001 by "
                 f"{link_expiry(link)}: http://127.0.0.1:5000/pay/{link.token}")}
    assert notifications(db)[0].status == OutboxStatus.DONE
    assert AUTH_TOKEN not in caplog.text and link.token not in caplog.text


def link_expiry(link) -> str:
    from portal.filters import local_time

    return local_time(link.expires_at, "Asia/Kolkata", "en_IN")


def test_twilio_messaging_service_sender(app, db, lab):
    with FakeTwilio(SID, AUTH_TOKEN) as fake:
        twilio_config(app, fake, sender="MG" + "2" * 32)
        send_link(db, lab, channels=["sms"])
        run_jobs(app)
    assert fake.requests[0].form["MessagingServiceSid"] == "MG" + "2" * 32
    assert "From" not in fake.requests[0].form


def test_twilio_outage_is_retried_and_a_bad_number_is_dead(app, db, lab):
    with FakeTwilio(SID, AUTH_TOKEN) as fake:
        twilio_config(app, fake)
        fake.fail = [(503, 20500)]
        send_link(db, lab, channels=["sms"])
        run_jobs(app)
        [row] = notifications(db)
        assert row.status == OutboxStatus.QUEUED
        assert row.last_error == "Twilio HTTP 503: 20500 Unable to create record: fake error 20500"
        make_due(db)
        run_jobs(app)
        assert notifications(db)[0].status == OutboxStatus.DONE

        fake.fail = [(400, 21211)]  # "invalid To number": trying again cannot help
        send_link(db, lab, channels=["sms"], bill_reference="B-2")
        run_jobs(app)
    row = notifications(db)[-1]
    assert (row.status, row.attempts) == (OutboxStatus.DEAD, 1)
    assert row.last_error == "Twilio HTTP 400: 21211 Unable to create record: fake error 21211"
    assert len(fake.requests) == 3


def test_twilio_without_credentials_is_dead_with_the_reason(app, db, lab):
    app.config.update(PORTAL_SMS_BACKEND="twilio", PORTAL_TWILIO_ACCOUNT_SID=SID)
    send_link(db, lab, channels=["sms"])
    run_jobs(app)
    [row] = notifications(db)
    assert row.status == OutboxStatus.DEAD
    assert row.last_error == ("SMS backend is not configured: set PORTAL_TWILIO_AUTH_TOKEN, "
                              "PORTAL_TWILIO_FROM")


def dlt_lab(lab, db, **sms):
    lab = db.merge(lab)
    lab.message_templates = {"sms": {"sender_id": "ACMELB", "dlt_entity_id": "1201000000000001",
                                     "dlt_templates": {"link": "1107000000000000011"}, **sms}}
    db.commit()
    return lab


def test_http_backend_posts_sender_and_dlt_ids(app, db, lab, caplog):
    caplog.set_level(logging.DEBUG)
    lab = dlt_lab(lab, db)
    with FakeSmsProvider("authkey", "provider-key-never-logged") as fake:
        app.config.update(PORTAL_SMS_BACKEND="http", PORTAL_SMS_HTTP_URL=fake.url + "/v1/sms",
                          PORTAL_SMS_HTTP_AUTH_HEADER="authkey",
                          PORTAL_SMS_HTTP_API_KEY="provider-key-never-logged")
        link = send_link(db, lab, channels=["sms"])
        run_jobs(app)
    [request] = fake.requests
    [row] = notifications(db)
    assert (request.method, request.path) == ("POST", "/v1/sms")
    assert request.headers["Authkey"] == "provider-key-never-logged"
    assert request.json == {
        "to": "919876543210", "sender": "ACMELB", "dlt_entity_id": "1201000000000001",
        "dlt_template_id": "1107000000000000011", "reference": f"ntf_{row.id}",
        "message": ("Acme Diagnostics: please pay INR 1,234.50 for bill B-1001 by "
                    f"{link_expiry(link)}: http://127.0.0.1:5000/pay/{link.token}")}
    assert row.status == OutboxStatus.DONE
    assert "provider-key-never-logged" not in caplog.text and link.token not in caplog.text


def test_a_provider_echoing_a_credential_leaves_it_out_of_the_stored_error(app, db, lab,
                                                                          monkeypatch):
    from portal.notify import DeliveryError
    from portal.services import notifications as outbox

    key, smtp_password = "provider-key-never-stored", "smtp-pass-never-stored"
    app.config.update(PORTAL_SMS_BACKEND="http", PORTAL_SMS_HTTP_API_KEY=key,
                      PORTAL_SMTP_URL=f"smtp://desk:{smtp_password}@127.0.0.1:1")

    def echoing(*_args, **_kwargs):
        raise DeliveryError(f"provider says: key {key} refused; smtp {smtp_password}")

    monkeypatch.setattr(outbox, "send_sms", echoing)
    send_link(db, lab, channels=["sms"])
    run_jobs(app)
    [row] = notifications(db)
    assert row.last_error.startswith("provider says: key ")
    assert key not in row.last_error and smtp_password not in row.last_error


def test_http_backend_refuses_an_sms_without_its_dlt_template(app, db, lab):
    lab = dlt_lab(lab, db, dlt_templates={})
    with FakeSmsProvider("Authorization", "Bearer k") as fake:
        app.config.update(PORTAL_SMS_BACKEND="http", PORTAL_SMS_HTTP_URL=fake.url,
                          PORTAL_SMS_HTTP_API_KEY="Bearer k")
        send_link(db, lab, channels=["sms"])
        run_jobs(app)
    assert fake.requests == []
    [row] = notifications(db)
    assert row.status == OutboxStatus.DEAD
    assert row.last_error == ("The lab has no DLT template id for the link SMS: an admin sets "
                              "it on the Messages page.")


def test_http_backend_retries_a_5xx_and_gives_up_on_a_4xx(app, db, lab):
    lab = dlt_lab(lab, db)
    with FakeSmsProvider("Authorization", "Bearer k") as fake:
        app.config.update(PORTAL_SMS_BACKEND="http", PORTAL_SMS_HTTP_URL=fake.url,
                          PORTAL_SMS_HTTP_API_KEY="Bearer k")
        fake.fail = [502, 422]
        send_link(db, lab, channels=["sms"])
        run_jobs(app)
        assert notifications(db)[0].last_error == "SMS provider answered HTTP 502"
        make_due(db)
        run_jobs(app)
    [row] = notifications(db)
    assert (row.status, row.attempts, row.last_error) == (
        OutboxStatus.DEAD, 2, "SMS provider answered HTTP 422")


def test_unknown_sms_backend_is_dead_with_the_reason(app, db, lab):
    app.config["PORTAL_SMS_BACKEND"] = "carrier-pigeon"
    send_link(db, lab, channels=["sms"])
    run_jobs(app)
    assert notifications(db)[0].last_error == (
        "PORTAL_SMS_BACKEND='carrier-pigeon' is not one of console, twilio, http")


def test_a_link_paid_before_its_message_goes_is_not_sent(app, db, lab):
    link = send_link(db, lab, channels=["sms"])
    link.status = LinkStatus.PAID
    db.commit()
    run_jobs(app)
    [row] = notifications(db)
    assert (row.status, row.sent_at, row.last_error) == (
        OutboxStatus.DONE, None, "Not sent: the link is paid.")


def test_a_sent_message_is_not_sent_again_by_a_second_run_of_its_job(app, db, lab):
    with FakeTwilio(SID, AUTH_TOKEN) as fake:
        twilio_config(app, fake)
        send_link(db, lab, channels=["sms"])
        run_jobs(app)
        job = db.scalar(select(Job).where(Job.kind == "notification.send"))
        job.status, job.run_at = OutboxStatus.QUEUED, utcnow()  # as after a lost lease
        db.commit()
        run_jobs(app)
    assert len(fake.requests) == 1


# --- the link page: list and Resend -----------------------------------------------------------

def test_link_page_lists_messages_and_resends(staff_client, db, lab):
    link = send_link(db, lab, channels=["sms"])
    page = staff_client.get(f"/links/{link.id}").get_data(as_text=True)
    assert "Payment link by SMS" in page and "Waiting" in page
    assert "Resend by SMS" in page and "Resend by email" in page
    token = csrf_from(page)
    response = staff_client.post(f"/links/{link.id}/resend",
                                 data={"csrf_token": token, "channel": "email"},
                                 follow_redirects=True)
    assert "The link will be sent again to asha@example.com." in response.get_data(as_text=True)
    # the SMS is still waiting: a second press does not queue another
    response = staff_client.post(f"/links/{link.id}/resend",
                                 data={"csrf_token": token, "channel": "sms"},
                                 follow_redirects=True)
    assert "A message by SMS is already waiting to be sent." in response.get_data(as_text=True)
    assert [(n.channel, n.template) for n in notifications(db)] == [
        (Channel.SMS, "link"), (Channel.EMAIL, "link")]


def test_resend_needs_csrf_an_open_link_and_the_labs_own_link(staff_client, db, lab, build):
    link = send_link(db, lab, channels=[])
    assert staff_client.post(f"/links/{link.id}/resend",
                             data={"channel": "sms"}).status_code == 400
    token = csrf_from(staff_client.get(f"/links/{link.id}").get_data(as_text=True))
    other = send_link(db, build.lab("other"), channels=[], bill_reference="O-1")
    assert staff_client.post(f"/links/{other.id}/resend",
                             data={"csrf_token": token, "channel": "sms"}).status_code == 404
    link.status = LinkStatus.CANCELLED
    db.commit()
    page = staff_client.get(f"/links/{link.id}").get_data(as_text=True)
    assert "Resend by SMS" not in page
    response = staff_client.post(f"/links/{link.id}/resend",
                                 data={"csrf_token": token, "channel": "sms"},
                                 follow_redirects=True)
    assert "This link is cancelled: there is nothing to send." in response.get_data(as_text=True)
    assert notifications(db) == []


def test_resend_to_a_missing_contact_is_refused(staff_client, db, lab):
    link = send_link(db, lab, channels=[], email=None)
    page = staff_client.get(f"/links/{link.id}").get_data(as_text=True)
    assert "Resend by email" not in page
    response = staff_client.post(f"/links/{link.id}/resend",
                                 data={"csrf_token": csrf_from(page), "channel": "email"},
                                 follow_redirects=True)
    assert "The patient has no email address." in response.get_data(as_text=True)


# --- receipts ---------------------------------------------------------------------------------

def test_a_paid_link_queues_one_receipt_per_channel_once(app, client, db, lab):
    link = send_link(db, lab, channels=[])
    reference = start_payment(client, link)
    assert post_event(client, reference, event_id="evt_paid_1").status_code == 200
    assert post_event(client, reference, event_id="evt_paid_1").status_code == 200  # replay
    assert post_event(client, reference, event_id="evt_paid_2").status_code == 200  # new id
    rows = notifications(db, template="receipt")
    assert sorted(n.channel.value for n in rows) == ["email", "sms"]
    assert {n.dedupe_key for n in rows} == {f"receipt:{link.id}:email", f"receipt:{link.id}:sms"}
    with SmtpServer() as smtp:
        app.config["PORTAL_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}"
        run_jobs(app)
    [got] = smtp.received
    assert got.message["Subject"] == "Receipt for bill B-1001 from Acme Diagnostics"
    assert f"/pay/{link.token}/receipt" in got.message.get_body(("plain",)).get_content()


def test_receipts_follow_the_labs_choice(client, db, lab):
    lab = db.merge(lab)
    lab.message_templates = {"receipt_channels": ["sms"]}
    db.commit()
    link = send_link(db, lab, channels=[])
    post_event(client, start_payment(client, link))
    assert [n.channel for n in notifications(db, template="receipt")] == [Channel.SMS]


def test_a_failed_payment_sends_no_receipt(client, db, lab):
    link = send_link(db, lab, channels=[])
    post_event(client, start_payment(client, link), succeeded=False)
    assert notifications(db, template="receipt") == []


@pytest.fixture(autouse=True)
def _quiet_defaults(app):
    app.config.update(PORTAL_SMTP_URL=None, PORTAL_SMS_BACKEND="console")
