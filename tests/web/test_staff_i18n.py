"""Staff pages stay English, but every text on them is marked for translation (staff domain).

With I18N_STAFF_PSEUDO every marked staff text renders bracketed and accented; any Latin word
left outside the brackets escaped the marking, unless it is a data value from the database.
The pages come from the app's url_map, so a staff page added later is walked too.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from babel.util import pathmatch
from markupsafe import Markup
from sqlalchemy import select

from portal import catalogs, i18n
from portal.models import Customer, OnlinePayment, Role
from portal.services import outhooks
from tests.conftest import csrf_from, sign_in
from tests.web.helpers import post_event, start_payment
from tests.web.test_i18n import escaped_strings

# Routes that are not staff HTML pages: patients', the API, files and the printable slip
# (the patient's, in the link's language).
NOT_STAFF = re.compile(r"^/(pay|sandbox|payments|webhook-endpoints|static|brand|healthz|readyz"
                       r"|metrics)\b|\.(json|csv|xlsx|ico|pdf)$|/print$")
# Values that are data or formatting, not text: dates, currency codes, gateways' own names.
DATA_WORDS = set(
    "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec AM PM UTC IST INR USD AED PHP HKD "
    "Asia Kolkata Razorpay PhonePe PayTabs PesoPay Square Sandbox sandbox".split())


@pytest.fixture
def staff_pseudo(app):
    app.config["I18N_STAFF_PSEUDO"] = True


def mark_values(value):
    """Every `{{ value }}` a template prints, fenced ⟪…⟫ so the check leaves it out: what is
    checked is the templates' own text (values from Python are data, or marked at their source)."""
    if value is None:
        return value
    if isinstance(value, Markup):
        return Markup(re.sub(r">([^<]*[^\s<][^<]*)<", r">⟪\1⟫<", value))
    text = str(value)
    return text if text.startswith("⟦") else "⟪" + text + "⟫"


def template_text_escaped(html: str) -> list[str]:
    # `{% trans %}` variables are not finalized: the language names are their only data.
    return escaped_strings(re.sub(r"⟪.*?⟫", "", html, flags=re.S),
                           *i18n.staff_choices().values(), *i18n.LANGUAGES.values())


def staff_pages(app, client, db, lab, link, user_id, upload_id="none"):
    """Every GET staff page of the url_map, filled in with the builder's data."""
    app.config["PORTAL_WEBHOOK_TEST_MODE"] = "all"  # 127.0.0.1 allowed: the page has a row
    endpoint = outhooks.create_endpoint(db, app.config, db.merge(lab),
                                        "http://127.0.0.1:9/hook").endpoint
    db.commit()
    payment = db.scalars(select(OnlinePayment).where(OnlinePayment.id == link.id)).one()
    customer = db.scalars(select(Customer).where(Customer.lab_id == lab.id)).first()
    values = {"link_id": link.id, "payment_id": payment.id, "customer_id": customer.id,
              "user_id": user_id, "name": "sandbox", "upload_id": upload_id,
              "endpoint_id": endpoint.id}
    pages = {}
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or NOT_STAFF.search(rule.rule):
            continue
        path = rule.rule
        for arg in rule.arguments:
            path = re.sub(rf"<(?:\w+:)?{arg}>", str(values[arg]), path)
        pages[path] = client.get(path)
    return pages


def test_every_staff_page_is_marked_for_translation(app, client, build, lab, db, staff_pseudo):
    admin = build.user(lab, "admin@acme.test", role=Role.ADMIN)
    other = build.user(lab, "clerk@acme.test")
    link = build.link(lab, description="Blood tests", allow_partial=True)
    reference = start_payment(client, link)
    post_event(client, reference, amount=50000)
    db.commit()

    assert sign_in(client, admin.email).status_code == 302
    token = csrf_from(client.get("/links/bulk").get_data(as_text=True))
    checked = client.post("/links/bulk", data={"csrf_token": token, "file": (io.BytesIO(
        b"name,phone,amount,bill_reference\nAsha,+919876543210,100,B-9\nRavi,1,x,B-10\n"),
        "a.csv")}, content_type="multipart/form-data")
    upload_id = checked.headers["Location"].rsplit("/", 1)[1]  # a checked file to review
    app.jinja_env.finalize = mark_values
    app.jinja_env.cache.clear()  # compiled before: recompiled with the marking
    pages = staff_pages(app, client, db, lab, link, other.id, upload_id)
    signed_out = app.test_client()  # the signed-in client is sent on from these two
    pages.update({"/login": signed_out.get("/login"),
                  "/invite": signed_out.get("/invite?token=nope")})
    pages["404"] = client.get("/links/999999")
    assert f"/admin/users/{other.id}" in pages and "/" in pages

    escaped = {}
    for path, response in pages.items():
        assert response.status_code in (200, 404, 410), path
        html = response.get_data(as_text=True)
        assert "⟦" in html, path
        words = [w for w in template_text_escaped(html) if w not in DATA_WORDS]
        if words:
            escaped[path] = words
    assert escaped == {}, "\n".join(f"{p}: {sorted(set(w))}" for p, w in escaped.items())


def test_staff_pages_stay_english_and_patient_pages_keep_their_language(admin_client, build,
                                                                         lab):
    assert "⟦" not in admin_client.get("/links/new").get_data(as_text=True)
    link = build.link(lab, language="hi")
    html = admin_client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert "देय राशि" in html  # the staff domain does not reach a patient's page


def test_the_staff_pseudo_locale_leaves_patient_pages_alone(client, build, lab, staff_pseudo):
    link = build.link(lab)
    html = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert "⟦" not in html and "Amount due" in html
    assert i18n.PSEUDO not in html


JINJA = re.compile(r"{%-? *trans\b.*?endtrans *-?%}|{{.*?}}|{%.*?%}|{#.*?#}", re.S)


def staff_templates() -> list[Path]:
    root = catalogs.ROOT / "templates"
    return sorted(p for p in root.glob("**/*.html")
                  if not any(pathmatch(pattern, p.relative_to(root).as_posix())
                             for pattern in catalogs.PATIENT_TEMPLATES))


def test_every_text_of_the_staff_templates_is_marked():
    """Also the branches the walk above does not reach (warnings, empty lists, errors)."""
    assert len(staff_templates()) > 25
    unmarked = {}
    for path in staff_templates():
        words = escaped_strings(JINJA.sub(" ", path.read_text()))
        if words:
            unmarked[path.relative_to(catalogs.ROOT).as_posix()] = words
    assert unmarked == {}, "\n".join(f"{p}: {w}" for p, w in unmarked.items())
