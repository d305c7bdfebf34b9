"""/admin/lab: each setting checked, every change audited; the lab's brand on the pay page."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zlib

import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from portal.admin.message_forms import MessagesForm
from portal.models import AuditLog, Lab
from portal.services import lab_settings
from portal.services.lab_settings import SettingsError
from tests.conftest import csrf_from

GOOD = {"name": "Acme Diagnostics", "currency": "INR", "timezone": "Asia/Kolkata",
        "default_expiry_hours": "72", "reminder_hours": "", "refund_threshold": "",
        "refund_reasons": "", "brand_color": ""}


def png(width: int = 4, height: int = 2) -> bytes:
    """A real (tiny, grey) PNG."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
                                                                 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def upload(data: bytes, name: str = "logo.png", mimetype: str = "image/png"):
    return (io.BytesIO(data), name, mimetype)


def set_logo(db, lab, data: bytes | None = None) -> str:
    data = data or png()
    lab.logo_image, lab.logo_content_type = data, "image/png"
    lab.logo_sha256 = hashlib.sha256(data).hexdigest()
    db.commit()
    return lab.logo_sha256


def page(client) -> str:
    response = client.get("/admin/lab")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def post(client, **changes):
    no_file = (io.BytesIO(b""), "", "application/octet-stream")  # what a browser sends
    return client.post("/admin/lab", data={"csrf_token": csrf_from(page(client)),
                                           **GOOD, "logo": no_file, **changes})


def stored(db, lab) -> Lab:
    return db.scalar(select(Lab).where(Lab.id == lab.id))


def audit_count(db) -> int:
    return db.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "lab.update"))


def test_staff_are_refused_and_never_see_the_menu_entries(staff_client, db, lab):
    assert staff_client.get("/admin/lab").status_code == 403
    html = staff_client.get("/").get_data(as_text=True)
    answer = staff_client.post("/admin/lab", data={**GOOD, "csrf_token": csrf_from(html),
                                                   "name": "Staff Was Here"})
    assert answer.status_code == 403 and stored(db, lab).name == "Acme Diagnostics"
    assert staff_client.get("/admin/audit").status_code == 403
    assert "/admin/lab" not in html and "/admin/audit" not in html
    assert "Lab settings" not in html and ">Audit<" not in html
    assert 'href="/customers"' in html  # staff do see customers


def test_admins_see_the_menu_entries(admin_client):
    html = admin_client.get("/").get_data(as_text=True)
    assert 'href="/admin/lab"' in html and 'href="/admin/audit"' in html


def test_page_shows_the_current_settings(admin_client, db, lab):
    lab.refund_approval_threshold = 500000
    lab.refund_reasons = ["Test cancelled", "Duplicate payment"]
    lab.reminder_hours_before = [24, 2]
    lab.brand_color = "#0b5cad"
    db.commit()
    html = page(admin_client)
    assert 'value="Acme Diagnostics"' in html and 'value="INR"' in html
    assert '<option selected value="Asia/Kolkata">Asia/Kolkata</option>' in html
    assert 'value="5000.00"' in html and 'value="24, 2"' in html and 'value="#0b5cad"' in html
    assert ">\r\nTest cancelled\nDuplicate payment</textarea>" in html
    assert 'aria-current="page">Lab settings</a>' in html


def test_save_stores_every_setting_and_audits_the_changes(admin_client, db, lab, admin):
    answer = post(admin_client, name="Acme Labs", currency="usd", timezone="America/New_York",
                  default_expiry_hours="48", reminder_hours="2 24 24",
                  refund_threshold="1,250.50",
                  refund_reasons="Test cancelled\n\n  Sample   rejected \ntest cancelled\n",
                  brand_color="#0B5CAD", logo=upload(png()))
    assert answer.status_code == 303 and answer.headers["Location"] == "/admin/lab"
    saved = stored(db, lab)
    assert (saved.name, saved.currency, saved.timezone, saved.default_expiry_hours) == (
        "Acme Labs", "USD", "America/New_York", 48)
    assert saved.reminder_hours_before == [24, 2]
    assert saved.refund_approval_threshold == 125050
    assert saved.refund_reasons == ["Test cancelled", "Sample rejected"]
    assert saved.brand_color == "#0b5cad"
    assert (saved.logo_image, saved.logo_content_type) == (png(), "image/png")
    assert saved.logo_sha256 == hashlib.sha256(png()).hexdigest()
    [entry] = db.scalars(select(AuditLog).where(AuditLog.action == "lab.update")).all()
    assert (entry.user_id, entry.object_type, entry.object_id, entry.ip_address) == (
        admin.id, "lab", str(lab.id), "127.0.0.1")
    assert entry.detail["fields_changed"] == [
        "name", "currency", "timezone", "default_expiry_hours", "reminder_hours_before",
        "refund_approval_threshold", "refund_reasons", "brand_color", "logo_sha256"]
    assert entry.detail["changes"]["currency"] == {"from": "INR", "to": "USD"}
    assert entry.detail["changes"]["refund_approval_threshold"] == {"from": None, "to": 125050}
    assert entry.detail["changes"]["logo_sha256"] == {"from": None, "to": saved.logo_sha256}
    html = page(admin_client)
    assert "Lab settings saved: name, currency, time zone, link expiry, reminders" in html

    audit_page = admin_client.get("/admin/audit").get_data(as_text=True)
    assert "Lab settings changed" in audit_page and admin.email in audit_page
    assert "currency: INR → USD" in audit_page
    assert "refund approval above: none → $1,250.50" in audit_page
    assert "reminders (hours): none → 24, 2" in audit_page


def test_only_the_changed_fields_are_audited(admin_client, db, lab):
    post(admin_client, default_expiry_hours="24")
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "lab.update"))
    assert entry.detail["fields_changed"] == ["default_expiry_hours"]
    assert entry.detail["changes"] == {"default_expiry_hours": {"from": 72, "to": 24}}


def test_saving_nothing_new_writes_no_audit_entry(admin_client, db, lab):
    answer = post(admin_client)
    assert answer.status_code == 303
    assert "Nothing to save" in page(admin_client)
    assert audit_count(db) == 0


@pytest.mark.parametrize("field, value, message", [
    ("name", "  ", "Enter the lab&#39;s name."),
    ("currency", "XYZ", "Enter a three-letter ISO 4217 currency code"),
    ("currency", "RUPEE", "Field cannot be longer than 3 characters."),
    ("timezone", "Mars/Olympus_Mons", "Choose a time zone from the list"),
    ("timezone", "EST5EDT", "Choose a time zone from the list"),
    ("default_expiry_hours", "0", "Enter 1 to 2160 hours (90 days)."),
    ("default_expiry_hours", "2161", "Enter 1 to 2160 hours (90 days)."),
    ("default_expiry_hours", "two", "Not a valid integer value."),
    ("reminder_hours", "24, soon", "Enter whole hours, separated by commas."),
    ("reminder_hours", "0", "Each reminder must be 1 to 2160 hours before expiry."),
    ("reminder_hours", "48, 24, 6, 1", "At most 3 reminders."),
    ("refund_threshold", "-5", "The amount must be more than zero."),
    ("refund_threshold", "10.505", "INR amounts have at most 2 decimals."),
    ("refund_threshold", "lots", "Enter the amount as a number"),
    ("refund_reasons", "Fine\n" + "x" * 201, "Each reason can be at most 200 characters."),
    ("refund_reasons", "\n".join(f"Reason {i}" for i in range(21)), "At most 20 reasons."),
    ("brand_color", "blue", "Enter the colour as # and six hex digits"),
    ("brand_color", "#12345", "Enter the colour as # and six hex digits"),
    ("brand_color", "#ffcc00",
     "White text on #ffcc00 has a contrast of 1.5:1; the pay button needs at least 4.5:1"),
    ("brand_color", "#777777", "has a contrast of 4.5:1; the pay button needs at least 4.5:1"),
])
def test_bad_input_rerenders_with_a_message_and_saves_nothing(admin_client, db, lab, field,
                                                              value, message):
    answer = post(admin_client, **{field: value, "name": "Renamed Lab",
                                   **({"name": value} if field == "name" else {})})
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    assert message in html
    assert "Nothing was saved." in html and 'aria-invalid="true"' in html
    saved = stored(db, lab)
    assert saved.name == "Acme Diagnostics" and saved.brand_color is None
    assert saved.logo_sha256 is None and saved.reminder_hours_before == []
    assert audit_count(db) == 0


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@pytest.mark.parametrize("data, name, mimetype, message", [
    (SVG, "logo.svg", "image/svg+xml", "SVG images are not accepted"),
    (b"<svg onload=alert(1)>", "logo.png", "image/png", "SVG images are not accepted"),
    (b"GIF89a" + b"\x00" * 40, "logo.png", "image/png", "is not a PNG, JPEG or WebP"),
    (b"<html>hello</html>", "logo.png", "image/png", "is not a PNG, JPEG or WebP"),
    (png()[:12], "logo.png", "image/png", "could not be read"),
    (png() + b"\x00" * 200 * 1024, "logo.png", "image/png",
     "The logo can be at most 200 KB; this file is 201 KB"),
    (b"", "empty.png", "image/png", "The chosen file is empty."),
])
def test_a_bad_logo_is_refused_and_nothing_saved(admin_client, db, lab, data, name, mimetype,
                                                 message):
    answer = post(admin_client, name="Renamed Lab", logo=upload(data, name, mimetype))
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    assert message in html and "Nothing was saved." in html
    assert 'aria-invalid="true"' in html
    saved = stored(db, lab)
    assert saved.name == "Acme Diagnostics"
    assert (saved.logo_image, saved.logo_content_type, saved.logo_sha256) == (None, None, None)
    assert audit_count(db) == 0


def test_a_logo_can_be_removed_and_no_file_keeps_it(admin_client, db, lab):
    assert post(admin_client, logo=upload(png())).status_code == 303
    digest = stored(db, lab).logo_sha256
    html = page(admin_client)
    assert f'src="/brand/logo/{lab.id}/{digest}.png"' in html and "Remove logo" in html
    assert post(admin_client, default_expiry_hours="24").status_code == 303  # no file chosen
    assert stored(db, lab).logo_sha256 == digest
    both = post(admin_client, logo=upload(png(8, 8)), remove_logo="y")
    assert both.status_code == 422 and "not both" in both.get_data(as_text=True)
    lab.logo_url = "https://cdn.acme.example/old.png"  # an address from before 0004
    db.commit()
    assert post(admin_client, remove_logo="y", default_expiry_hours="24").status_code == 303
    db.expire_all()
    saved = stored(db, lab)
    assert (saved.logo_image, saved.logo_content_type, saved.logo_sha256,
            saved.logo_url) == (None, None, None, None)
    entry = db.scalars(select(AuditLog).where(AuditLog.action == "lab.update")
                       .order_by(AuditLog.id.desc())).first()
    assert entry.detail["changes"] == {"logo_sha256": {"from": digest, "to": None}}
    assert "/brand/logo/" not in page(admin_client)
    assert admin_client.get(f"/brand/logo/{lab.id}/{digest}.png").status_code == 404


def test_threshold_follows_the_currency_chosen(admin_client, db, lab):
    bad = post(admin_client, currency="JPY", refund_threshold="5000.50")
    assert bad.status_code == 422 and "JPY amounts have no decimals." in bad.get_data(
        as_text=True)
    assert post(admin_client, currency="KWD", refund_threshold="12.345").status_code == 303
    assert stored(db, lab).refund_approval_threshold == 12345
    assert 'value="12.345"' in page(admin_client)
    assert post(admin_client, currency="KWD", refund_threshold="").status_code == 303
    assert stored(db, lab).refund_approval_threshold is None  # blank: no approval needed


def test_contrast_is_measured_as_wcag_does():
    assert lab_settings.contrast_with_white("#000000") == pytest.approx(21.0)
    assert lab_settings.contrast_with_white("#ffffff") == pytest.approx(1.0)
    assert lab_settings.contrast_with_white("#767676") == pytest.approx(4.54, abs=0.01)
    assert lab_settings.check_brand_color("#767676") == "#767676"  # the lightest grey allowed
    with pytest.raises(SettingsError):
        lab_settings.check_brand_color("#777777")  # 4.48:1
    assert lab_settings.check_brand_color("0B5CAD") == "#0b5cad"
    assert lab_settings.check_brand_color("") is None


@pytest.mark.parametrize("text", ["", "24, 2", "2 24 24", "24,soon", "0", "2161",
                                  "48, 24, 6, 1", "1,1,1,1", " 6 ", "-3", "2.5"])
def test_reminder_hours_are_read_as_the_messages_page_reads_them(app, text):
    """Both pages edit Lab.reminder_hours_before: same result, same message."""
    with app.test_request_context():
        form = MessagesForm(formdata=MultiDict({"reminder_hours": text}))
        try:
            form.validate_reminder_hours(form.reminder_hours)
            theirs = ("ok", form.hours)
        except Exception as exc:
            theirs = ("error", str(exc))
    try:
        ours = ("ok", lab_settings.parse_reminder_hours(text))
    except SettingsError as exc:
        ours = ("error", str(exc))
    assert ours == theirs


def test_reminders_saved_here_show_on_the_messages_page(admin_client, db, lab):
    assert post(admin_client, reminder_hours="6, 48").status_code == 303
    assert 'value="48, 6"' in admin_client.get("/admin/messages").get_data(as_text=True)


# --- the pay page in the lab's colours ---------------------------------------------------------

def test_pay_page_wears_the_brand_colour_and_logo(client, build, lab, db):
    lab.brand_color = "#7a1f5c"
    digest = set_logo(db, lab, png(96, 32))
    link = build.link(lab)
    answer = client.get(f"/pay/{link.token}")
    html = answer.get_data(as_text=True)
    assert '<link rel="stylesheet" href="/brand/7a1f5c.css">' in html
    assert (f'<img class="pay__logo" src="/brand/logo/{lab.id}/{digest}.png" '
            'alt="Acme Diagnostics" width="144" height="48">') in html
    assert "style=" not in html  # the CSP allows no inline style
    csp = answer.headers["Content-Security-Policy"]
    assert "img-src 'self' data:;" in csp  # the logo is ours: no other origin allowed
    assert "style-src 'self';" in csp and "default-src 'self';" in csp

    css = client.get("/brand/7a1f5c.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert ".pay__button{background:#7a1f5c}" in css.get_data(as_text=True)
    assert "immutable" in css.headers["Cache-Control"]
    assert client.get("/brand/red.css").status_code == 404


def test_an_uploaded_logo_is_served_from_our_origin(admin_client, client, build, lab, db):
    assert post(admin_client, logo=upload(png(), "photo.jpg", "image/jpeg")).status_code == 303
    digest = stored(db, lab).logo_sha256
    html = client.get(f"/pay/{build.link(lab).token}").get_data(as_text=True)
    src = f"/brand/logo/{lab.id}/{digest}.png"  # its type is read from its bytes, not its name
    assert f'src="{src}"' in html
    logo = client.get(src)
    assert logo.status_code == 200 and logo.data == png()
    assert logo.headers["Content-Type"] == "image/png"
    assert logo.headers["X-Content-Type-Options"] == "nosniff"
    assert logo.headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_the_pay_page_references_no_other_origin(app, client, build, lab, db):
    lab.brand_color = "#7a1f5c"
    lab.logo_url = "https://cdn.acme.example/logo.png"  # left from before 0004: never used
    set_logo(db, lab)
    answer = client.get(f"/pay/{build.link(lab).token}")
    html = answer.get_data(as_text=True)
    base = app.config["PORTAL_BASE_URL"].rstrip("/")
    addresses = re.findall(r'(?:src|href|action|srcset|poster|data)="([^"]*)"', html)
    assert any(a.startswith("/brand/logo/") for a in addresses)
    for address in addresses:
        assert (address.startswith("/") and not address.startswith("//")) or \
            address.startswith(base + "/") or address.startswith("#"), address
    assert "cdn.acme.example" not in html
    assert not [u for u in re.findall(r"https?://[^\s\"'<>]+", html)
                if not u.startswith(base + "/")]
    assert "cdn.acme.example" not in answer.headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", [
    "/brand/logo/{lab}/{wrong}.png", "/brand/logo/{lab}/{digest}.jpg",
    "/brand/logo/{other}/{digest}.png", "/brand/logo/{lab}/{short}.png",
    "/brand/logo/99999/{digest}.png",
])
def test_a_logo_url_that_is_not_the_labs_current_logo_is_404(client, build, db, lab, path):
    digest = set_logo(db, lab)
    other = build.lab("other")
    url = path.format(lab=lab.id, other=other.id, digest=digest, wrong="0" * 64,
                      short=digest[:12])
    assert client.get(url).status_code == 404


def test_without_branding_the_pay_page_is_unchanged(client, build, lab):
    answer = client.get(f"/pay/{build.link(lab).token}")
    html = answer.get_data(as_text=True)
    assert "/brand/" not in html and "<img" not in html
    assert '<p class="pay__lab">Acme Diagnostics</p>' in html
    assert "img-src 'self' data:;" in answer.headers["Content-Security-Policy"]


def test_a_zone_outside_the_list_is_kept_not_replaced(admin_client, db, lab):
    """A lab made by `portal lab create --timezone Etc/GMT-4`: saving must not move its clock."""
    lab.timezone = "Etc/GMT-4"
    db.commit()
    assert '<option selected value="Etc/GMT-4">Etc/GMT-4</option>' in page(admin_client)
    assert post(admin_client, timezone="Etc/GMT-4", name="Acme Labs").status_code == 303
    saved = stored(db, lab)
    assert (saved.name, saved.timezone) == ("Acme Labs", "Etc/GMT-4")


def test_jpeg_and_webp_are_read_by_their_bytes():
    jpeg = (b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x00" * 9
            + b"\xff\xc0" + struct.pack(">HBHH", 17, 8, 30, 120) + b"\x00" * 12 + b"\xff\xd9")
    webp = (b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8X" + struct.pack("<I", 10)
            + b"\x00" * 4 + (63).to_bytes(3, "little") + (15).to_bytes(3, "little"))
    assert (lab_settings.check_logo(jpeg).content_type,
            lab_settings.check_logo(jpeg).width, lab_settings.check_logo(jpeg).height) == (
        "image/jpeg", 120, 30)
    logo = lab_settings.check_logo(webp)
    assert (logo.content_type, logo.extension, logo.width, logo.height) == (
        "image/webp", "webp", 64, 16)
