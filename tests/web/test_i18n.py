"""Patient pages in the patient's language: the choice, the pseudo-locale, the API and forms."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from sqlalchemy import select

from portal import i18n
from portal.models import LinkStatus, OnlinePayment, utcnow
from tests.api_helpers import make_api_key
from tests.conftest import csrf_from
from tests.web.helpers import post_event, start_payment

LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


class VisibleText(HTMLParser):
    """Text a patient reads (and alt/aria-label), leaving out values (<bdi>, <code>), the
    language menu's names (their own lang) and scripts."""

    SKIP = {"bdi", "code", "script", "style"}
    VOID = {"meta", "link", "input", "img", "br", "hr"}

    def __init__(self):
        super().__init__()
        self.stack: list[bool] = []
        self.page_lang: str | None = None
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.page_lang = attrs.get("lang")
        skipped = (bool(self.stack and self.stack[-1]) or tag in self.SKIP
                   or ("lang" in attrs and tag != "html" and attrs["lang"] != self.page_lang))
        for name in ("alt", "aria-label", "title", "placeholder"):
            if attrs.get(name) and not skipped:
                self.texts.append(attrs[name])
        if tag not in self.VOID:
            self.stack.append(skipped)

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if not (self.stack and self.stack[-1]) and data.strip():
            self.texts.append(data)


def escaped_strings(html: str, *values: str) -> list[str]:
    """Words that reached the page without passing through gettext."""
    parser = VisibleText()
    parser.feed(html)
    leftovers = []
    for text in parser.texts:
        text = re.sub(r"⟦.*?⟧", "", text, flags=re.S)
        for value in values:
            text = text.replace(value, "")
        leftovers += LATIN_WORD.findall(text)
    return leftovers


@pytest.fixture
def pseudo(app):
    app.config["I18N_PSEUDO"] = True
    return i18n.PSEUDO


def test_every_patient_page_is_translated_in_the_pseudo_locale(client, build, lab, db, pseudo):
    lab_name = lab.name
    q = f"?lang={pseudo}"
    open_link = build.link(lab, description="Blood tests", amount_paid=10000,
                           allow_partial=True)
    expired = build.link(lab, amount_paid=10000)
    expired.expires_at = utcnow() - timedelta(hours=1)
    cancelled = build.link(lab, status=LinkStatus.CANCELLED)
    declined, paid = build.link(lab), build.link(lab)
    db.commit()
    pages = {
        "pay": client.get(f"/pay/{open_link.token}{q}"),
        "expired": client.get(f"/pay/{expired.token}{q}"),
        "cancelled": client.get(f"/pay/{cancelled.token}{q}"),
        "not found": client.get(f"/pay/no-such-token{q}"),
        "form expired": client.post(f"/pay/{open_link.token}{q}"),
        "error": client.post(f"/pay/{open_link.token}/qr.svg{q}"),  # 405
    }
    reference = start_payment(client, declined)
    pages["sandbox"] = client.get(client.post(
        f"/pay/{paid.token}", data={"csrf_token": csrf_from(client.get(
            f"/pay/{paid.token}{q}").get_data(as_text=True))}).headers["Location"]
        + f"&lang={pseudo}")
    pages["processing"] = client.get(f"/pay/{declined.token}/return?ref={reference}")
    post_event(client, reference, succeeded=False)
    pages["failed"] = client.get(f"/pay/{declined.token}/return?ref={reference}")
    paid_ref = start_payment(client, paid)
    post_event(client, paid_ref)
    pages["return paid"] = client.get(f"/pay/{paid.token}/return?ref={paid_ref}")
    pages["paid"] = client.get(f"/pay/{paid.token}")
    pages["receipt"] = client.get(f"/pay/{paid.token}/receipt")

    assert pages["error"].status_code == 405 and pages["form expired"].status_code == 400
    for name, response in pages.items():
        html = response.get_data(as_text=True)
        assert f'<html lang="{pseudo}"' in html, name  # the cookie carried the choice on
        assert escaped_strings(html, lab_name) == [], name
        assert "⟦" in html, name


def test_the_checker_catches_a_string_that_escaped_translation(client, build, lab, pseudo):
    link = build.link(lab)
    html = client.get(f"/pay/{link.token}?lang={pseudo}").get_data(as_text=True)
    broken = html.replace("⟦Àɱöûñţ đûé⟧", "Amount due")
    assert escaped_strings(broken, lab.name) == ["Amount", "due"]


def test_the_page_speaks_the_links_language_and_marks_it(client, build, lab):
    link = build.link(lab, language="hi")
    html = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert '<html lang="hi">' in html and "देय राशि" in html
    assert "₹1,234.50" in html  # Indian grouping, Latin digits
    arabic = build.link(lab, language="ar")
    html = client.get(f"/pay/{arabic.token}").get_data(as_text=True)
    assert '<html lang="ar" dir="rtl">' in html and "المبلغ المستحق" in html
    assert "1,234.50\u00a0₹" in html  # ar puts the symbol after the digits; never dropped


def test_choice_order_query_then_cookie_then_link_then_browser(client, build, lab, db):
    link = build.link(lab, language="ta")
    page = client.get(f"/pay/{link.token}", headers={"Accept-Language": "es"})
    assert '<html lang="ta">' in page.get_data(as_text=True)  # the link beats the browser
    assert "portal_lang" not in page.headers.get("Set-Cookie", "")

    chosen = client.get(f"/pay/{link.token}?lang=zh-hant")
    assert '<html lang="zh-Hant">' in chosen.get_data(as_text=True)
    cookie = chosen.headers["Set-Cookie"]
    assert "portal_lang=zh-Hant" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    again = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert '<html lang="zh-Hant">' in again  # remembered for the next page

    old = build.link(lab)
    old.language = None  # a link made before languages: the browser decides
    db.commit()
    client.delete_cookie("portal_lang")
    html = client.get(f"/pay/{old.token}",
                      headers={"Accept-Language": "fr;q=1, zh-HK;q=0.8, en;q=0.5"})
    assert '<html lang="zh-Hant">' in html.get_data(as_text=True)
    html = client.get(f"/pay/{old.token}", headers={"Accept-Language": "fr, de"})
    assert '<html lang="en">' in html.get_data(as_text=True)  # the lab's default


@pytest.mark.parametrize("value", ["xx", "", "hi-", "../../etc", "a" * 500, "hi%00",
                                   "<script>", "en-XA"])
def test_unknown_or_malformed_choices_fall_back(client, build, lab, value):
    link = build.link(lab, language="bn")
    client.set_cookie("portal_lang", value)
    response = client.get(f"/pay/{link.token}", query_string={"lang": value},
                          headers={"Accept-Language": value})
    assert response.status_code == 200
    assert '<html lang="bn">' in response.get_data(as_text=True)
    assert "portal_lang" not in response.headers.get("Set-Cookie", "")


@pytest.mark.parametrize("header", ["*", "zh-CN", "q=;;,", "tl-PH", "x" * 300, ";q=1"])
def test_accept_language_edge_cases_never_fail(client, header):
    response = client.get("/pay/no-such-token", headers={"Accept-Language": header})
    assert response.status_code == 404
    expected = "fil" if header == "tl-PH" else "en"
    assert f'<html lang="{expected}"' in response.get_data(as_text=True)


def test_the_language_menu_is_plain_links_that_keep_the_page(client, build, lab):
    link = build.link(lab)
    html = client.get(f"/pay/{link.token}?x=1&lang=ta").get_data(as_text=True)
    assert f'href="/pay/{link.token}?x=1&amp;lang=hi" lang="hi" hreflang="hi">' in html
    html = client.get(f"/pay/{link.token}?lang=en").get_data(as_text=True)
    assert f'href="/pay/{link.token}?lang=hi" lang="hi" hreflang="hi">हिन्दी</a>' in html
    assert '<span lang="en" aria-current="true">English</span>' in html
    for code in i18n.LANGUAGES:
        assert f'lang="{code}"' in html


def test_staff_pages_are_not_switched_by_the_patient_cookie(staff_client):
    staff_client.set_cookie("portal_lang", "ar")
    html = staff_client.get("/links").get_data(as_text=True)
    assert '<html lang="en">' in html


def test_patient_error_pages_are_in_the_patients_language(client, build, lab):
    link = build.link(lab, language="es")
    response = client.post(f"/pay/{link.token}/qr.svg?lang=es")
    assert response.status_code == 405
    html = response.get_data(as_text=True)
    assert '<html lang="es">' in html and "Esta página no se puede mostrar" in html
    assert "Sign in" not in html


def test_api_takes_and_returns_the_language(client, lab, db):
    key = make_api_key(db, lab)
    body = {"amount": 1500, "currency": "BHD", "bill_reference": "B-LANG",
            "customer": {"name": "Sara"}, "expires_in": 3600, "language": "ar"}
    auth = {"Authorization": f"Bearer {key}"}
    created = client.post("/payments/initiate", json=body, headers=auth)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["language"] == "ar"
    token = created.get_json()["url"].rsplit("/", 1)[1]
    html = client.get(f"/pay/{token}").get_data(as_text=True)
    assert "1.500\u00a0د.ب.\u200f" in html  # three decimals, the currency kept, in Arabic

    for bad in ("AR", "arabic", 7, ["ar"]):
        refused = client.post("/payments/initiate", json={**body, "language": bad},
                              headers=auth)
        assert refused.status_code == 422
        assert "language" in refused.get_json()["error"]["fields"]
    lab_default = client.post("/payments/initiate",
                              json={**body, "language": None, "bill_reference": "B-2"},
                              headers=auth)
    assert lab_default.get_json()["language"] == "en"


def test_staff_choose_the_language_on_a_new_link(staff_client, lab, db):
    page = staff_client.get("/links/new").get_data(as_text=True)
    assert '<option selected value="en">English · English</option>' in page
    assert 'value="hi">Hindi · हिन्दी</option>' in page
    response = staff_client.post("/links/new", data={
        "csrf_token": csrf_from(page), "patient_name": "Asha", "phone": "9876543210",
        "amount": "500", "currency": "INR", "bill_reference": "B-HI",
        "expires_at": (utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"),
        "language": "hi"})
    assert response.status_code == 303
    link = db.scalar(select(OnlinePayment).where(OnlinePayment.bill_reference == "B-HI"))
    assert link.language == "hi"


def test_admin_sets_the_labs_language_and_locale(admin_client, lab, db):
    page = admin_client.get("/admin/lab").get_data(as_text=True)
    assert 'value="en_IN">English (India)</option>' in page
    form = {"csrf_token": csrf_from(page), "name": lab.name, "currency": "AED",
            "timezone": "Asia/Dubai", "locale": "en_AE", "default_language": "ar",
            "default_expiry_hours": "72", "reminder_hours": "", "refund_threshold": "",
            "refund_reasons": "", "brand_color": ""}
    assert admin_client.post("/admin/lab", data=form).status_code == 303
    db.refresh(lab)
    assert (lab.locale, lab.default_language, lab.timezone) == ("en_AE", "ar", "Asia/Dubai")
    refused = admin_client.post("/admin/lab", data={**form, "locale": "xx_YY!"})
    assert refused.status_code == 422


def test_a_dubai_lab_no_longer_groups_in_lakhs(client, build, db):
    lab = build.lab(currency="AED", locale="en_AE", timezone="Asia/Dubai")
    link = build.link(lab)
    html = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert "AED\u00a01,234.50" in html and "1,23,4" not in html
    assert "Gulf Standard Time" in html  # times name their zone


def test_messages_go_in_the_links_language_with_the_labs_own_text(admin_client, build, lab,
                                                                   db, app):
    from portal.services import messages

    page = admin_client.get("/admin/messages?language=hi").get_data(as_text=True)
    assert "you are editing the <strong>Hindi</strong> texts" in page.replace("You", "you")
    assert "कृपया बिल {bill_reference} के {amount} का भुगतान {expires_at} तक करें" in page
    assert 'lang="hi" dir="auto"' in page
    data = {"csrf_token": csrf_from(page), "reminder_hours": "", "receipt_by_email": "y",
            "action": "save", "link_sms": "{lab_name}: बिल {bill_reference}, {amount}: {link}"}
    response = admin_client.post("/admin/messages?language=hi", data=data)
    assert response.status_code == 303, response.get_data(as_text=True)
    db.refresh(lab)
    stored = lab.message_templates
    assert stored["translations"] == {"hi": {"link.sms": data["link_sms"]}}
    assert stored["texts"] == {}  # English untouched

    hindi = build.link(lab, language="hi", bill_reference="B-7")
    message = messages.render_for(lab, hindi, "link", "https://pay.example")
    assert message.sms == f"{lab.name}: बिल B-7, INR 1,234.50: https://pay.example/pay/{hindi.token}"
    assert message.subject == f"{lab.name} की ओर से बिल B-7 का भुगतान लिंक"  # the default
    assert messages.sms_length(message.sms).unicode  # Devanagari goes as UCS-2: 70 a part
    english = build.link(lab, bill_reference="B-8")
    assert messages.render_for(lab, english, "link", "https://x").sms.startswith(
        f"{lab.name}: please pay INR 1,234.50")
    with app.test_request_context():
        from portal.services.notifications import email_html

        html = email_html(lab, messages.render_for(lab, hindi, "link", "https://x"))
    assert '<html lang="hi">' in html and "अभी भुगतान करें" in html


def test_the_pay_page_stays_light_in_every_language(client, build, lab):
    link = build.link(lab, description="Blood tests")
    css = client.get("/static/pay.css").get_data(as_text=True)
    assert "@font-face" not in css and "@import" not in css
    for code in i18n.LANGUAGES:
        html = client.get(f"/pay/{link.token}?lang={code}").get_data(as_text=True)
        assert "<script" not in html, code
        assert len(html.encode()) + len(css.encode()) < 7 * 1024, code  # about 6 KB


def test_the_sandbox_hosted_page_follows_the_links_language(client, build, lab):
    link = build.link(lab, language="ta")
    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    started = client.post(f"/pay/{link.token}", data={"csrf_token": csrf_from(page)},
                          headers={"Accept-Language": "en"})
    assert started.headers["Location"].endswith("&lang=ta")
    hosted = client.get(started.headers["Location"], headers={"Accept-Language": "en"})
    assert hosted.status_code == 200
    html = hosted.get_data(as_text=True)
    assert '<html lang="ta">' in html and "கட்டணத்தை நிராகரிக்கவும்" in html
    assert "portal_lang" not in hosted.headers.get("Set-Cookie", "")  # a hint, not a choice


def test_the_printed_slip_is_in_the_links_language_and_the_staff_bar_is_not(staff_client,
                                                                             build, lab):
    link = build.link(lab, language="ar", bill_reference="B-SLIP")
    page = staff_client.get(f"/links/{link.id}/print").get_data(as_text=True)
    assert '<html lang="ar" dir="rtl">' in page
    assert "طلب دفع" in page and "امسح الرمز بكاميرا هاتفك" in page
    assert '<header class="toolbar" lang="en" dir="ltr">' in page  # the staff's own controls
    assert 'alt="رمز QR لدفع الفاتورة B-SLIP"' in page
    english = build.link(lab)
    assert '<html lang="en">' in staff_client.get(f"/links/{english.id}/print").get_data(
        as_text=True)


def test_the_slip_and_every_message_are_translated_in_the_pseudo_locale(
        staff_client, app, build, lab, pseudo):
    from portal.services import messages

    link = build.link(lab, language=pseudo, amount_paid=100, bill_reference="B-PSEUDO")
    slip = staff_client.get(f"/links/{link.id}/print").get_data(as_text=True)
    assert f'<html lang="{pseudo}"' in slip
    toolbar = slip.split('<header class="toolbar" lang="en" dir="ltr">')[1].split("</header>")[0]
    assert escaped_strings(slip.replace(toolbar, ""), lab.name, "Asha Rao", "QR") == []

    settings = messages.MessageSettings()
    for kind in messages.KINDS:
        values = messages.values_for(lab, link, kind, "https://pay.example", pseudo)
        message = messages.render(settings, kind, values, pseudo)
        for text in (message.sms, message.subject, message.text):
            for value in sorted(values.values(), key=len, reverse=True):
                text = text.replace(value, "")
            text = re.sub(r"⟦.*?⟧", "", text.replace("INR", ""), flags=re.S)
            assert LATIN_WORD.findall(text) == [], (kind, text)
