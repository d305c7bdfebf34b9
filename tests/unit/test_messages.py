"""Message texts: placeholders, validation, rendering and SMS length; SMTP URLs."""

from datetime import UTC, datetime

import pytest

from portal.models import Customer, Lab, OnlinePayment
from portal.money import format_money_code
from portal.notify import PermanentError
from portal.notify.email import parse_smtp_url
from portal.services import messages
from portal.services.messages import (
    DEFAULTS,
    KINDS,
    PARTS,
    MessageSettings,
    TemplateError,
    check_text,
    render,
    settings_of,
    sms_length,
    values_for,
)

BASE = "https://pay.example-lab.com"
TOKEN = "T0kenT0kenT0kenT0kenT0kenT0kenT0kenT0ken123"


def make_lab(**fields) -> Lab:
    defaults = dict(id=1, name="Acme Diagnostics", currency="INR", timezone="Asia/Kolkata",
                    locale="en_IN", default_expiry_hours=72, reminder_hours_before=[],
                    message_templates={})
    return Lab(**{**defaults, **fields})


def make_link(**fields) -> OnlinePayment:
    defaults = dict(id=7, lab_id=1, token=TOKEN, amount=123450, amount_paid=0, currency="INR",
                    bill_reference="B-1001", description="HbA1c and lipid profile",
                    expires_at=datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
                    patient_name="Asha Rao", patient_phone="+919876543210",
                    patient_email="asha@example.com",
                    customer=Customer(name="Asha Rao", phone="+919876543210",
                                      email="asha@example.com"))
    return OnlinePayment(**{**defaults, **fields})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("part", PARTS)
def test_every_default_text_is_valid(kind, part):
    check_text(kind, part, DEFAULTS[f"{kind}.{part}"])


@pytest.mark.parametrize("kind,part,text,message", [
    ("link", "sms", "Pay {amount} for {test_name}: {link}", "Unknown placeholder {test_name}"),
    ("link", "sms", "Pay {amount} {{link}}", "Use braces only around a placeholder"),
    ("link", "sms", "Pay {amount} now: {link", "Use braces only around a placeholder"),
    ("link", "sms", "Pay {amount} at the counter", "Include {link}"),
    ("reminder", "email_body", "Please pay {amount}.", "Include {link}"),
    ("receipt", "sms", "Paid by {expires_at}", "Unknown placeholder {expires_at}"),
    ("link", "email_subject", "Bill {bill_reference}\nBcc: x@evil.test", "must be one line"),
    ("link", "sms", "{link}" + "x" * 500, "Keep it under 480 characters"),
    ("link", "sms", "{lab_name.__class__} {link}", "Unknown placeholder {lab_name.__class__}"),
])
def test_bad_texts_are_refused_with_a_message(kind, part, text, message):
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")
                       .replace(".", r"\.")):
        check_text(kind, part, text)


def test_receipt_may_leave_out_the_link():
    check_text("receipt", "sms", "{lab_name}: thank you for paying {amount}.")


def test_link_message_carries_the_bill_and_never_its_description():
    lab, link = make_lab(), make_link()
    message = render(MessageSettings(), "link", values_for(lab, link, "link", BASE))
    assert message.sms == ("Acme Diagnostics: please pay INR 1,234.50 for bill B-1001 by "
                           f"28 Nov 2026, 5:30 PM: {BASE}/pay/{TOKEN}")
    assert message.subject == "Payment link for bill B-1001 from Acme Diagnostics"
    assert "Hello Asha Rao," in message.text and "Amount due: ₹1,234.50" in message.text
    assert "Pay by: 28 Nov 2026, 5:30 PM" in message.text  # the lab's time zone (IST)
    for text in (message.sms, message.subject, message.text):
        assert "HbA1c" not in text and "lipid" not in text


def test_expiry_is_shown_in_the_labs_time_zone():
    lab = make_lab(timezone="Asia/Dubai", locale="en_GB", currency="GBP")
    values = values_for(lab, make_link(currency="GBP"), "link", BASE)
    assert values["expires_at"] == "28 Nov 2026, 16:00"  # 12:00 UTC; en_GB: the 24-hour clock
    assert values["amount"] == "£1,234.50"


def test_reminder_asks_for_what_is_still_outstanding():
    link = make_link(amount_paid=23450)
    message = render(MessageSettings(), "reminder", values_for(make_lab(), link, "reminder", BASE))
    assert "INR 1,000.00" in message.sms and "₹1,000.00" in message.text


def test_receipt_points_at_the_receipt_page_and_shows_what_was_paid():
    link = make_link(amount_paid=123450, paid_at=datetime(2026, 11, 27, 4, 0, tzinfo=UTC))
    message = render(MessageSettings(), "receipt", values_for(make_lab(), link, "receipt", BASE))
    assert message.link == f"{BASE}/pay/{TOKEN}/receipt"
    assert "received ₹1,234.50 for bill B-1001 on 27 Nov 2026, 9:30 AM" in message.text


def test_a_labs_own_text_replaces_the_default_and_others_stay():
    lab = make_lab(message_templates={"texts": {"link.sms": "{lab_name} {amount} {link}"}})
    settings = settings_of(lab)
    message = render(settings, "link", values_for(lab, make_link(), "link", BASE))
    assert message.sms == f"Acme Diagnostics INR 1,234.50 {BASE}/pay/{TOKEN}"
    assert message.subject == "Payment link for bill B-1001 from Acme Diagnostics"


def test_saving_keeps_only_changed_texts_and_sorts_reminders():
    lab = make_lab()
    settings = MessageSettings(texts={"link.sms": DEFAULTS["link.sms"],
                                      "receipt.sms": "{lab_name}: paid, thanks."},
                               receipt_channels=("email",), sms_sender_id="ACMELB",
                               dlt_templates={"link": "1107000000000000001"})
    messages.save_settings(lab, settings, [2, 24, 2])
    assert lab.message_templates["texts"] == {"receipt.sms": "{lab_name}: paid, thanks."}
    assert lab.reminder_hours_before == [24, 2]
    again = settings_of(lab)
    assert again.receipt_channels == ("email",) and again.sms_sender_id == "ACMELB"
    assert again.dlt_templates == {"link": "1107000000000000001"}
    assert settings_of(make_lab()).receipt_channels == ("email", "sms")  # the default


def test_subject_values_cannot_add_a_header_line():
    link = make_link(bill_reference="B-1\r\nBcc: x@evil.test")
    message = render(MessageSettings(), "link", values_for(make_lab(), link, "link", BASE))
    assert "\n" not in message.subject and "\r" not in message.subject


@pytest.mark.parametrize("text,characters,segments,unicode", [
    ("a" * 160, 160, 1, False),
    ("a" * 161, 161, 2, False),
    ("a" * 306, 306, 2, False),
    ("a" * 307, 307, 3, False),
    ("€" * 80, 80, 1, False),  # extension characters take two septets
    ("€" * 81, 81, 2, False),
    ("₹" + "a" * 69, 70, 1, True),  # one non-GSM character makes the whole SMS UCS-2
    ("₹" + "a" * 70, 71, 2, True),
    ("नमस्ते", 6, 1, True),
])
def test_sms_length(text, characters, segments, unicode):
    assert sms_length(text) == messages.SmsLength(characters, segments, unicode)


def test_default_link_sms_fits_in_one_or_two_gsm_parts():
    settings = MessageSettings()
    message = render(settings, "link", values_for(make_lab(), make_link(), "link", BASE))
    length = sms_length(message.sms)
    assert not length.unicode and length.segments <= 2


def test_money_with_its_code_for_sms():
    assert format_money_code(123450, "INR") == "INR 1,234.50"
    assert format_money_code(12345678, "INR") == "INR 1,23,456.78"  # Indian grouping
    assert format_money_code(1500, "BHD", "en_US") == "BHD 1.500"
    assert format_money_code(1000, "JPY", "en_US") == "JPY 1,000"


def test_preview_shows_the_dlt_form_of_each_sms():
    previews = messages.previews(make_lab(), MessageSettings(), BASE,
                                 now=datetime(2026, 11, 26, 6, 30, tzinfo=UTC))
    assert previews["link"].dlt_text == ("{#var#}: please pay {#var#} for bill {#var#} by "
                                         "{#var#}: {#var#}")
    assert "Acme Diagnostics: please pay INR 1,234.50 for bill B-1001 by 29 Nov 2026, 12:00 PM" \
        in previews["link"].message.sms


@pytest.mark.parametrize("url,expected", [
    ("smtp://mail.internal", ("mail.internal", 25, "plain", None, None)),
    ("smtp://u%40lab.test:p%3Ass@mail.example.com:587?starttls=1",
     ("mail.example.com", 587, "starttls", "u@lab.test", "p:ss")),
    ("smtp://user:pw@mail.example.com?starttls=true", ("mail.example.com", 587, "starttls",
                                                        "user", "pw")),
    ("smtps://user:pw@mail.example.com", ("mail.example.com", 465, "tls", "user", "pw")),
    ("smtps://user:pw@mail.example.com:2465", ("mail.example.com", 2465, "tls", "user", "pw")),
])
def test_smtp_urls(url, expected):
    s = parse_smtp_url(url)
    assert (s.host, s.port, s.security, s.username, s.password) == expected
    assert "pw" not in repr(s) and "p:ss" not in repr(s)


@pytest.mark.parametrize("url,message", [
    ("http://mail.example.com", "must start with smtp"),
    ("smtps://mail.example.com?starttls=1", "TLS already"),
    ("smtp://mail.example.com?tls=1", "unknown options: tls"),
    ("smtp://mail.example.com:notaport", "bad port"),
    ("smtp://", "no host"),
])
def test_bad_smtp_urls_are_permanent_errors(url, message):
    with pytest.raises(PermanentError, match=message):
        parse_smtp_url(url)


def test_email_headers_survive_any_lab_or_patient_name():
    import email
    import email.policy

    from portal.notify.email import build_email

    for lab_name, patient in (('City Labs, Pune "East"', "Asha Rao"), ("सिटी लैब्स", "आशा राव")):
        built = build_email(mail_from="payments@lab.in", sender_name=lab_name, to="a@b.in",
                            to_name=patient, subject="बिल B-1", text="नमस्ते ₹1", html="<p>x</p>",
                            message_id="notification-1")
        parsed = email.message_from_bytes(built.as_bytes(), policy=email.policy.default)
        assert parsed["From"].addresses[0].display_name == lab_name
        assert parsed["From"].addresses[0].addr_spec == "payments@lab.in"
        assert parsed["To"].addresses[0].display_name == patient
        assert parsed["Subject"] == "बिल B-1"
        assert parsed.get_body(("plain",)).get_content() == "नमस्ते ₹1\n"


def test_a_bad_mail_from_is_a_permanent_error():
    from portal.notify.email import build_email

    with pytest.raises(PermanentError, match="PORTAL_MAIL_FROM is not an email address"):
        build_email(mail_from="payments", sender_name="x", to="a@b.in", to_name="",
                    subject="s", text="t", html="h", message_id="m")


def test_a_line_break_in_a_name_or_subject_cannot_add_a_header():
    import email
    import email.policy

    from portal.notify.email import build_email

    built = build_email(mail_from="payments@lab.in", sender_name="City\r\nBcc: all@evil.test",
                        to="a@b.in", to_name="Asha\nCc: x@evil.test", subject="Bill\r\nX: y",
                        text="t", html="<p>t</p>", message_id="notification-1")
    parsed = email.message_from_bytes(built.as_bytes(), policy=email.policy.default)
    assert (parsed["Bcc"], parsed["Cc"], parsed["X"]) == (None, None, None)
    assert parsed["From"].addresses[0].display_name == "City Bcc: all@evil.test"
    assert parsed["Subject"] == "Bill X: y"


def test_an_address_beyond_ascii_is_built_for_smtputf8():
    from email.message import EmailMessage

    from portal.notify.email import build_email

    built = build_email(mail_from="payments@lab.in", sender_name="सिटी लैब्स", to="आशा@example.in",
                        to_name="", subject="बिल B-1", text="नमस्ते", html="<p>x</p>",
                        message_id="notification-1")
    # The email package's own policy, which smtplib can send as SMTPUTF8; the classic
    # MIME classes cannot.
    assert isinstance(built, EmailMessage) and built["To"] == "आशा@example.in"
    assert built.get_body(("plain",)).get_content() == "नमस्ते\n"
