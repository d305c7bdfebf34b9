"""/admin/audit: the lab's audit log, newest first, keyset pages, filtered by action."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from portal.models import AuditLog
from portal.services.audit import audit
from tests.conftest import csrf_from


def page(client, **args) -> str:
    response = client.get("/admin/audit", query_string=args)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def rows(html: str) -> list[str]:
    return re.findall(r"<code class=\"muted\">([a-z_.]+)</code>", html)


def row_of(html: str, action: str) -> str:
    at = html.index(f'<code class="muted">{action}</code>')
    return html[html.rindex("<tr>", 0, at):html.index("</tr>", at)]


def test_staff_are_refused(staff_client):
    assert staff_client.get("/admin/audit").status_code == 403


def test_shows_who_what_object_time_and_address(admin_client, admin, build, lab, db):
    lab.timezone = "America/New_York"
    db.commit()
    link = build.link(lab, bill_reference="B-77", amount=125000)  # by the API: nobody signed in
    at = datetime(2026, 1, 15, 14, 30, 5, tzinfo=UTC)
    db.add(AuditLog(lab_id=lab.id, user_id=admin.id, action="link.cancel",
                    object_type="online_payment", object_id=str(link.id),
                    ip_address="203.0.113.9", created_at=at, detail={}))
    db.commit()
    html = page(admin_client)
    cancel_row = row_of(html, "link.cancel")
    assert "<strong>Link cancelled</strong>" in cancel_row
    assert "15 Jan 2026, 9:30:05 AM" in cancel_row  # New York time, not UTC
    assert admin.email in cancel_row and "203.0.113.9" in cancel_row
    assert f'<a href="/links/{link.id}">Link {link.id}</a>' in cancel_row
    created_row = row_of(html, "link.create")
    assert "The portal" in created_row and "amount: ₹1,250.00" in created_row
    assert "bill reference: B-77" in created_row
    assert rows(html) == ["link.cancel", "link.create", "user.login"]  # newest (id) first
    assert 'aria-current="page">Audit</a>' in html


def test_sign_ins_and_lab_changes_are_listed(admin_client, admin, lab):
    token = csrf_from(admin_client.get("/admin/lab").get_data(as_text=True))
    admin_client.post("/admin/lab", data={
        "csrf_token": token, "name": "Acme Labs", "currency": "INR", "timezone": "Asia/Kolkata",
        "default_expiry_hours": "72", "reminder_hours": "", "refund_threshold": "",
        "refund_reasons": "", "brand_color": "", "logo_url": ""})
    html = page(admin_client)
    assert rows(html) == ["lab.update", "user.login"]
    assert "name: Acme Diagnostics → Acme Labs" in html
    assert f'<a href="/admin/lab">Lab {lab.id}</a>' in html


def test_only_the_labs_own_entries(admin_client, build, lab, db):
    other = build.lab("other", name="Other Labs")
    audit(db, lab_id=other.id, user_id=None, action="link.cancel", object_type="online_payment",
          object_id=1, ip="198.51.100.7")
    db.commit()
    html = page(admin_client)
    assert "198.51.100.7" not in html and "link.cancel" not in rows(html)


def test_filter_by_action_and_by_group(admin_client, build, lab, db):
    link = build.link(lab)
    audit(db, lab_id=lab.id, user_id=None, action="link.cancel", object_type="online_payment",
          object_id=link.id)
    audit(db, lab_id=lab.id, user_id=None, action="linkage.rebuild", object_type="lab")
    db.commit()
    assert rows(page(admin_client, action="link.cancel")) == ["link.cancel"]
    assert rows(page(admin_client, action="link.*")) == ["link.cancel", "link.create"]
    html = page(admin_client, action="link.*")
    assert '<option value="link.*" selected>Any link action</option>' in html
    assert '<option value="linkage.rebuild" >Linkage: rebuild</option>' in html  # seen lately
    assert '<option value="lab.update" >Lab settings changed</option>' in html  # known
    assert "No entries for" in page(admin_client, action="refund.approve")
    assert admin_client.get("/admin/audit?action=link'--").status_code == 400


def test_keyset_pages_are_stable_and_complete(admin_client, lab, db):
    at = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)  # equal timestamps: the id orders them
    for i in range(110):
        db.add(AuditLog(lab_id=lab.id, user_id=None, action="link.resend",
                        object_type="online_payment", object_id=str(i), created_at=at,
                        detail={"channel": "sms"}))
    db.commit()
    seen: list[str] = []
    url = "/admin/audit?action=link.resend"
    while url:
        html = admin_client.get(url).get_data(as_text=True)
        seen += re.findall(r">Link (\d+)</a>", html)
        match = re.search(r'href="(/admin/audit\?[^"]+)">Older entries', html)
        url = match.group(1).replace("&amp;", "&") if match else None
        assert "action=link.resend" in (url or "action=link.resend")
    assert seen == [str(i) for i in range(109, -1, -1)]
