"""WhatsApp: the third channel, through the Cloud API's messages endpoint (a local fake of it),
the lab's approved templates, and the staff's "Share on WhatsApp" link."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import pytest

from portal.models import Channel, LinkStatus, OutboxStatus
from tests.api_helpers import make_api_key
from tests.conftest import csrf_from
from tests.fakes.whatsapp_fake import FakeWhatsApp
from tests.web.test_links import form as link_form
from tests.web.test_notifications import link_expiry, make_due, notifications, run_jobs, send_link

PHONE_ID, TOKEN = "106540352242922", "EAAGwhatsappSystemUserToken0123456789"
TEMPLATES = {("pay_link", "en"): 6, ("pay_link", "hi"): 6, ("pay_reminder", "en"): 6,
             ("paid_receipt", "en"): 6}


def send_in(db, lab, language, **fields):
    link = send_link(db, lab, **fields)
    link.language = language  # read when the message is made, in the worker
    db.commit()
    return link


def whatsapp_lab(db, lab, **chat):
    lab = db.merge(lab)
    lab.message_templates = {"whatsapp": {
        "templates": {"link": "pay_link", "reminder": "pay_reminder", "receipt": "paid_receipt"},
        "language": "en", "languages": ["hi"], **chat}}
    db.commit()
    return lab


@pytest.fixture
def fake(app):
    with FakeWhatsApp(PHONE_ID, TOKEN, dict(TEMPLATES)) as server:
        app.config.update(PORTAL_WHATSAPP_ACCESS_TOKEN=TOKEN,
                          PORTAL_WHATSAPP_PHONE_NUMBER_ID=PHONE_ID,
                          PORTAL_WHATSAPP_API_BASE=server.url)
        yield server


@pytest.fixture(autouse=True)
def _quiet_defaults(app):
    app.config.update(PORTAL_SMTP_URL=None, PORTAL_SMS_BACKEND="console",
                      PORTAL_WHATSAPP_ACCESS_TOKEN=None, PORTAL_WHATSAPP_PHONE_NUMBER_ID=None)


def test_a_link_goes_as_the_labs_approved_template_with_its_variables_in_order(
        app, db, lab, fake, caplog):
    caplog.set_level(logging.DEBUG)
    lab = whatsapp_lab(db, lab)
    link = send_link(db, lab, channels=["whatsapp"])
    run_jobs(app)
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", f"/v21.0/{PHONE_ID}/messages")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.json == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": "919876543210",
        "type": "template",
        "template": {"name": "pay_link", "language": {"code": "en"}, "components": [
            {"type": "body", "parameters": [
                {"type": "text", "text": v} for v in (
                    "Acme Diagnostics", "Asha Rao", "₹1,234.50", "B-1001",
                    link_expiry(link).replace("\u202f", " "),
                    f"http://127.0.0.1:5000/pay/{link.token}")]}]}}
    [row] = notifications(db)
    assert (row.channel, row.recipient, row.status) == (Channel.WHATSAPP, "+919876543210",
                                                        OutboxStatus.DONE)
    assert row.sent_at is not None and row.last_error is None
    assert TOKEN not in caplog.text and link.token not in caplog.text


def test_the_template_follows_the_links_language_where_approved_in_it(app, db, lab, fake):
    lab = whatsapp_lab(db, lab)
    send_in(db, lab, "hi", channels=["whatsapp"])
    send_in(db, lab, "ta", channels=["whatsapp"], bill_reference="B-2")
    run_jobs(app)
    hindi, tamil = (r.json["template"] for r in fake.requests)
    assert hindi["language"] == {"code": "hi"}
    assert "₹" in hindi["components"][0]["parameters"][2]["text"]
    assert tamil["language"] == {"code": "en"}  # not approved in Tamil: the main language
    assert [n.status for n in notifications(db)] == [OutboxStatus.DONE, OutboxStatus.DONE]


@pytest.mark.parametrize("status, code", [(429, 130429), (400, 131056), (500, 131000),
                                          (503, 2), (401, 190)])
def test_throttling_outages_and_our_own_token_are_retried(app, db, lab, fake, status, code):
    lab = whatsapp_lab(db, lab)
    fake.fail = [(status, code)]
    send_link(db, lab, channels=["whatsapp"])
    run_jobs(app)
    [row] = notifications(db)
    assert (row.status, row.attempts) == (OutboxStatus.QUEUED, 1)
    assert row.last_error == f"WhatsApp HTTP {status}: error {code} fake error {code}"
    make_due(db)
    run_jobs(app)
    assert notifications(db)[0].status == OutboxStatus.DONE
    assert len(fake.sent) == 1


def test_a_template_meta_does_not_know_is_dead_at_once_with_the_reason(app, db, lab, fake):
    lab = whatsapp_lab(db, lab, templates={"link": "never_approved"})
    send_link(db, lab, channels=["whatsapp"])
    run_jobs(app)
    [row] = notifications(db)
    assert (row.status, row.attempts) == (OutboxStatus.DEAD, 1)
    assert row.last_error.startswith("WhatsApp HTTP 404: error 132001 (#132001) Template name")
    assert fake.sent == []


def test_an_error_echoing_the_token_is_stored_masked(app, db, lab, fake):
    lab = whatsapp_lab(db, lab)
    fake.echo_token = True
    app.config["PORTAL_WHATSAPP_ACCESS_TOKEN"] = "EAAGanOldTokenRevokedYesterday42"
    send_link(db, lab, channels=["whatsapp"])
    run_jobs(app)
    [row] = notifications(db)
    assert row.status == OutboxStatus.QUEUED  # an admin can mend the token: tried again
    assert row.last_error.startswith("WhatsApp HTTP 401: error 190 Invalid OAuth access token")
    assert "[masked]" in row.last_error and "OldTokenRevoked" not in row.last_error


def test_without_an_account_the_message_is_logged_with_phone_and_token_masked(
        app, db, lab, caplog):
    caplog.set_level(logging.INFO)
    lab = whatsapp_lab(db, lab)
    link = send_link(db, lab, channels=["whatsapp"])
    run_jobs(app)
    [row] = notifications(db)
    assert (row.status, row.sent_at) == (OutboxStatus.DONE, None)
    assert row.last_error.startswith("Logged only: no WhatsApp Business account is set up")
    assert "WhatsApp (no PORTAL_WHATSAPP_ACCESS_TOKEN, not sent) to +91******3210" in caplog.text
    assert "please pay ₹1,234.50 for bill B-1001" in caplog.text
    assert link.token not in caplog.text and "9876543210" not in caplog.text


def test_without_a_phone_number_id_it_is_dead_with_the_reason(app, db, lab):
    lab = whatsapp_lab(db, lab)
    app.config.update(PORTAL_WHATSAPP_ACCESS_TOKEN=TOKEN)
    send_link(db, lab, channels=["whatsapp"])
    run_jobs(app)
    [row] = notifications(db)
    assert row.status == OutboxStatus.DEAD
    assert "PORTAL_WHATSAPP_PHONE_NUMBER_ID" in row.last_error


def test_reminders_and_receipts_go_by_whatsapp_too(app, client, db, lab, fake):
    from tests.web.helpers import post_event, start_payment

    lab = whatsapp_lab(db, lab)
    lab.message_templates = {**lab.message_templates, "receipt_channels": ["whatsapp"]}
    db.commit()
    link = send_link(db, lab, channels=["whatsapp"])
    run_jobs(app)
    post_event(client, start_payment(client, link))
    run_jobs(app)
    names = [r["template"]["name"] for r in fake.sent]
    assert names == ["pay_link", "paid_receipt"]
    receipt = fake.sent[1]["template"]["components"][0]["parameters"]
    assert receipt[-1]["text"].endswith(f"/pay/{link.token}/receipt")


# --- staff: the new-link form, the link page, resend -------------------------------------------

def test_the_form_offers_whatsapp_only_once_the_lab_has_its_templates(staff_client, db, lab):
    assert b'name="send_whatsapp"' not in staff_client.get("/links/new").data
    whatsapp_lab(db, lab)
    page = staff_client.get("/links/new").data
    assert b'name="send_whatsapp"' in page and b"Send by WhatsApp" in page


def test_ticking_whatsapp_queues_a_whatsapp_message(staff_client, db, lab):
    whatsapp_lab(db, lab)
    data = link_form(staff_client, send_sms="", send_email="", send_whatsapp="y")
    response = staff_client.post("/links/new", data=data)
    assert response.status_code == 303
    [row] = notifications(db)
    assert (row.channel, row.recipient) == (Channel.WHATSAPP, "+919876543210")
    assert b"Sending it by WhatsApp" in staff_client.get(response.location).data


def test_whatsapp_ticked_for_a_lab_without_templates_sends_nothing_there(staff_client, db):
    data = link_form(staff_client, send_sms="", send_email="", send_whatsapp="y")
    assert staff_client.post("/links/new", data=data).status_code == 303
    assert notifications(db) == []


def test_share_on_whatsapp_opens_the_patients_chat_with_the_labs_text(staff_client, db, lab):
    link = send_link(db, lab, channels=[])
    page = staff_client.get(f"/links/{link.id}").get_data(as_text=True)
    [href] = [part.split('"')[1] for part in page.split("href=")[1:]
              if part.startswith('"https://wa.me/')]
    url = urlsplit(href.replace("&amp;", "&"))
    assert (url.netloc, url.path) == ("wa.me", "/919876543210")
    [text] = parse_qs(url.query)["text"]
    assert text == (f"Acme Diagnostics: please pay ₹1,234.50 for bill B-1001 by "
                    f"{link_expiry(link)}: http://127.0.0.1:5000/pay/{link.token}")
    assert 'rel="noopener noreferrer"' in page


def test_no_share_button_once_the_link_is_closed(staff_client, db, lab):
    link = send_link(db, lab, channels=[])
    link.status = LinkStatus.CANCELLED
    db.commit()
    assert "https://wa.me/" not in staff_client.get(f"/links/{link.id}").get_data(as_text=True)


def test_resend_by_whatsapp(staff_client, db, lab):
    link = send_link(db, lab, channels=[])
    page = staff_client.get(f"/links/{link.id}")
    assert b'value="whatsapp"' not in page.data
    csrf = csrf_from(page.get_data(as_text=True))
    refused = staff_client.post(f"/links/{link.id}/resend", follow_redirects=True,
                                data={"csrf_token": csrf, "channel": "whatsapp"})
    assert b"WhatsApp is not set up" in refused.data and notifications(db) == []
    whatsapp_lab(db, lab)
    page = staff_client.get(f"/links/{link.id}")
    assert b'value="whatsapp"' in page.data
    staff_client.post(f"/links/{link.id}/resend",
                      data={"csrf_token": csrf, "channel": "whatsapp"})
    [row] = notifications(db)
    assert row.channel == Channel.WHATSAPP
    assert b"Payment link by WhatsApp" in staff_client.get(f"/links/{link.id}").data


# --- the API -------------------------------------------------------------------------------------

BODY = {"amount": 50000, "currency": "INR", "bill_reference": "B-WA-1",
        "customer": {"name": "Asha Rao", "phone": "+919876543210"}, "notify": ["whatsapp"]}


def test_api_notify_whatsapp(client, db, lab):
    key = make_api_key(db, lab)
    headers = {"Authorization": f"Bearer {key}"}
    refused = client.post("/payments/initiate", json=BODY, headers=headers)
    assert refused.status_code == 422
    assert refused.json["error"]["code"] == "validation_failed"
    assert "WhatsApp is not set up" in refused.json["error"]["fields"]["notify"]
    whatsapp_lab(db, lab)
    no_phone = client.post("/payments/initiate", headers=headers, json={
        **BODY, "customer": {"name": "Asha Rao", "email": "asha@example.com"}})
    assert no_phone.json["error"]["fields"] == {
        "customer.phone": "Required to notify by whatsapp."}
    created = client.post("/payments/initiate", json=BODY, headers=headers)
    assert created.status_code == 201
    assert [n.channel for n in notifications(db)] == [Channel.WHATSAPP]


# --- the admin's settings ------------------------------------------------------------------------

def messages_form(page, **changes) -> dict:
    from html.parser import HTMLParser

    fields: dict[str, list[str]] = {}

    class Inputs(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "input" and a.get("name") and (a.get("type") not in ("checkbox", "radio")
                                                     or "checked" in a):
                fields.setdefault(a["name"], []).append(a.get("value") or "")
            if tag == "textarea" and a.get("name"):
                self.textarea = a["name"]
            if tag == "select" and a.get("name"):
                self.select = a["name"]
            if tag == "option" and "selected" in a and getattr(self, "select", None):
                fields.setdefault(self.select, []).append(a.get("value") or "")

        def handle_data(self, data):
            if getattr(self, "textarea", None):
                fields.setdefault(self.textarea, []).append(data)
                self.textarea = None

    Inputs().feed(page.get_data(as_text=True))
    fields.update({k: v if isinstance(v, list) else [v] for k, v in changes.items()})
    return {"action": "save", **fields}


def test_admin_names_the_templates_and_their_languages(admin_client, db, lab):
    page = admin_client.get("/admin/messages")
    assert b"WhatsApp templates" in page.data
    assert b"{{1}}" in page.data and b"{lab_name}" in page.data
    data = messages_form(page, whatsapp_link="pay_link", whatsapp_receipt="paid_receipt",
                         receipt_by_whatsapp="y", whatsapp_language="en",
                         whatsapp_languages=["hi", "ta"])
    response = admin_client.post("/admin/messages", data=data)
    assert response.status_code == 303, response.get_data(as_text=True)
    db.refresh(lab)
    chat = lab.message_templates["whatsapp"]
    assert chat == {"templates": {"link": "pay_link", "receipt": "paid_receipt"},
                    "language": "en", "languages": ["hi", "ta"]}
    assert "whatsapp" in lab.message_templates["receipt_channels"]


@pytest.mark.parametrize("changes, error", [
    ({"whatsapp_link": "Pay Link!"}, b"Lowercase letters, digits and _ only"),
    ({"receipt_by_whatsapp": "y"},
     b"Enter the receipt&#39;s template to send receipts by WhatsApp"),
    ({"whatsapp_languages": ["xx"]}, b"not a valid choice"),
])
def test_bad_whatsapp_settings_re_render_with_the_reason(admin_client, db, lab, changes, error):
    page = admin_client.get("/admin/messages")
    response = admin_client.post("/admin/messages", data=messages_form(page, **changes))
    assert response.status_code == 422
    assert error in response.data
    db.refresh(lab)
    assert "whatsapp" not in (lab.message_templates or {})
