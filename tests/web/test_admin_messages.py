"""/admin/messages: each lab edits its texts with a preview; bad placeholders are refused."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from portal.models import AuditLog, Lab
from portal.services.messages import DEFAULTS, KINDS, PARTS
from portal.worker import runner
from tests.conftest import csrf_from
from tests.web.test_notifications import send_link


def page(client) -> str:
    response = client.get("/admin/messages")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def form(client, **overrides) -> dict:
    """The page's form as a browser would post it, with `overrides`."""
    data = {"csrf_token": csrf_from(page(client)), "reminder_hours": "24, 2",
            "receipt_by_email": "y", "receipt_by_sms": "y", "sms_sender_id": "",
            "dlt_entity_id": "", "action": "save"}
    for kind in KINDS:
        data[f"dlt_{kind}"] = ""
        for part in PARTS:
            data[f"{kind}_{part}"] = DEFAULTS[f"{kind}.{part}"]
    data.update(overrides)
    return data


def stored(db, lab) -> Lab:
    return db.scalar(select(Lab).where(Lab.id == lab.id))  # read afresh


def test_page_shows_each_text_with_a_preview_in_the_labs_terms(admin_client, lab):
    html = page(admin_client)
    assert "Messages to patients" in html
    for kind in ("New link", "Reminder", "Receipt"):
        assert f">{kind}</h2>" in html
    assert "Acme Diagnostics: please pay INR 1,234.50 for bill B-1001 by" in html
    assert "Amount due: ₹1,234.50" in html
    assert "/pay/Xq7Lm2" in html and "SMS part" in html
    assert "{#var#}: please pay {#var#} for bill {#var#}" in html  # the DLT form
    assert 'aria-current="page">Messages</a>' in html


def test_only_admins_see_the_page(staff_client):
    assert staff_client.get("/admin/messages").status_code == 403


def test_save_stores_only_changes_and_reminder_hours(admin_client, db, lab):
    response = admin_client.post("/admin/messages", data=form(
        admin_client, link_sms="{lab_name}: bill {bill_reference}, {amount}. Pay: {link}",
        reminder_hours="2 24 24", receipt_by_sms="", sms_sender_id="ACMELB",
        dlt_entity_id="1201000000000001", dlt_link="1107000000000000011"))
    assert response.status_code == 303 and response.headers["Location"] == "/admin/messages"
    lab = stored(db, lab)
    assert lab.message_templates == {
        "texts": {"link.sms": "{lab_name}: bill {bill_reference}, {amount}. Pay: {link}"},
        "receipt_channels": ["email"],
        "sms": {"sender_id": "ACMELB", "dlt_entity_id": "1201000000000001",
                "dlt_templates": {"link": "1107000000000000011"}}}
    assert lab.reminder_hours_before == [24, 2]
    html = page(admin_client)
    assert "Message settings saved." in html
    assert "Acme Diagnostics: bill B-1001, INR 1,234.50. Pay: http" in html
    assert '<input checked id="receipt_by_email"' in html
    assert '<input id="receipt_by_sms"' in html  # not ticked
    assert DEFAULTS["receipt.sms"] in html  # the receipt SMS text is its own field
    audit = db.scalar(select(AuditLog).where(AuditLog.action == "messages.update"))
    assert audit.detail["reminder_hours"] == [24, 2]


def test_the_saved_text_is_what_patients_get(app, admin_client, db, lab, caplog):
    admin_client.post("/admin/messages", data=form(
        admin_client, link_sms="{lab_name} asks {amount} for {bill_reference}: {link}"))
    caplog.set_level(logging.INFO)
    send_link(db, stored(db, lab), channels=["sms"])
    runner.wait_idle(app)
    assert "Acme Diagnostics asks INR 1,234.50 for B-1001: http://127.0.0.1:5000/pay/" \
        in caplog.text


@pytest.mark.parametrize("field,value,message", [
    ("link_sms", "Pay {amount} for {test_name}: {link}",
     "Unknown placeholder {test_name}. You can use: {lab_name}, {patient_name}, {amount}"),
    ("reminder_sms", "Please pay {amount} soon.",
     "Include {link}: without it the patient cannot pay."),
    ("receipt_email_body", "Paid {amount} {", "Use braces only around a placeholder"),
    ("link_email_subject", "Bill {bill_reference}\nBcc: x@evil.test", "must be one line"),
    ("reminder_hours", "0", "Each reminder must be 1 to 2160 hours before expiry."),
    ("reminder_hours", "tomorrow", "Enter whole hours, separated by commas."),
    ("reminder_hours", "48, 24, 12, 2", "At most 3 reminders."),
    ("dlt_link", "11070-ABC", "Digits only."),
    ("sms_sender_id", "ACME-LAB", "Letters and digits only."),
])
def test_bad_input_rerenders_with_a_clear_message_and_saves_nothing(admin_client, db, lab,
                                                                     field, value, message):
    response = admin_client.post("/admin/messages", data=form(admin_client, **{field: value}))
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert message in html.replace("&#34;", '"').replace("&#39;", "'")
    assert f'id="{field}-error"' in html and "Nothing was saved." in html
    assert stored(db, lab).message_templates == {}
    assert stored(db, lab).reminder_hours_before == []


def test_preview_shows_a_draft_without_saving_it(admin_client, db, lab):
    response = admin_client.post("/admin/messages", data=form(
        admin_client, action="preview", receipt_sms="{lab_name} got {amount}, thanks!"))
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "This is a preview of your changes. They are not saved yet." in html
    assert "Acme Diagnostics got INR 1,234.50, thanks!" in html
    assert stored(db, lab).message_templates == {}


def test_an_emptied_text_goes_back_to_the_default(admin_client, db, lab):
    admin_client.post("/admin/messages", data=form(admin_client, link_sms="{link} {amount}"))
    assert stored(db, lab).message_templates["texts"] == {"link.sms": "{link} {amount}"}
    admin_client.post("/admin/messages", data=form(admin_client, link_sms=""))
    assert stored(db, lab).message_templates["texts"] == {}
    assert DEFAULTS["link.sms"] in page(admin_client)


def test_the_form_needs_its_csrf_token(admin_client, db, lab):
    data = form(admin_client)
    del data["csrf_token"]
    assert admin_client.post("/admin/messages", data=data).status_code == 400


def test_a_labs_texts_stay_its_own(app, admin_client, build, db, lab):
    other = build.lab("other")
    admin_client.post("/admin/messages", data=form(admin_client, link_sms="{link} {amount}"))
    assert stored(db, other).message_templates == {}
