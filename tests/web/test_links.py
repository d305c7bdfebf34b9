import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from portal.models import Customer, LinkStatus, OnlinePayment, utcnow
from tests.conftest import csrf_from


def local_expiry(hours: float, tz: str = "Asia/Kolkata") -> str:
    return (utcnow() + timedelta(hours=hours)).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%dT%H:%M")


def form(client, **overrides):
    data = {"csrf_token": csrf_from(client.get("/links/new").get_data(as_text=True)),
            "patient_name": "Asha Rao", "phone": "98765 43210", "email": "asha@example.com",
            "amount": "1,234.50", "currency": "INR", "bill_reference": "B-1001",
            "description": "", "expires_at": local_expiry(72)}
    data.update(overrides)
    return data


def count_links(db):
    return db.scalar(select(func.count()).select_from(OnlinePayment))


def test_new_link_form_defaults_to_the_lab(staff_client, lab):
    page = staff_client.get("/links/new").get_data(as_text=True)
    assert '<option selected value="INR">' in page
    assert 'name="expires_at"' in page and local_expiry(72)[:13] in page


def test_create_link(staff_client, db, staff):
    response = staff_client.post("/links/new", data=form(staff_client))
    assert response.status_code == 303
    link = db.scalar(select(OnlinePayment))
    assert response.headers["Location"] == f"/links/{link.id}"
    assert (link.amount, link.currency, link.bill_reference, link.status) == \
        (123450, "INR", "B-1001", LinkStatus.CREATED)
    assert link.customer.phone == "+919876543210" and link.customer.email == "asha@example.com"
    assert link.created_by_id == staff.id and link.gateway == "sandbox"
    assert len(link.token) >= 43  # 256 bits, URL-safe base64
    assert abs((link.expires_at - utcnow()) - timedelta(hours=72)) < timedelta(minutes=2)


@pytest.mark.parametrize("field,value,message", [
    ("amount", "1.234", "INR amounts have at most 2 decimals."),
    ("amount", "0", "The amount must be more than zero."),
    ("amount", "-10", "The amount must be more than zero."),
    ("amount", "ten", "Enter the amount as a number"),
    ("phone", "12345", "Enter a valid mobile number."),
    ("email", "not-an-email", "Enter a valid email address."),
    ("patient_name", "", "Enter the patient&#39;s name."),
    ("bill_reference", "", "Enter the bill reference."),
    ("expires_at", "2020-01-01T10:00", "The expiry must be in the future."),
])
def test_bad_input_rerenders_with_a_message_and_saves_nothing(staff_client, db, field, value,
                                                              message):
    data = form(staff_client, **{field: value})
    response = staff_client.post("/links/new", data=data)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert message in page
    assert f'id="{field}-error"' in page and 'aria-invalid="true"' in page
    # what the user typed is kept
    if field != "patient_name":
        assert 'value="Asha Rao"' in page
    assert count_links(db) == 0


def test_jpy_has_no_decimals(staff_client, db):
    response = staff_client.post("/links/new", data=form(staff_client, currency="JPY",
                                                         amount="1500.50"))
    assert "JPY amounts have no decimals." in response.get_data(as_text=True)
    response = staff_client.post("/links/new", data=form(staff_client, currency="JPY",
                                                         amount="1500"))
    assert response.status_code == 303
    assert db.scalar(select(OnlinePayment)).amount == 1500


def test_bhd_takes_three_decimals(staff_client, db):
    response = staff_client.post("/links/new", data=form(staff_client, currency="BHD",
                                                         amount="12.345"))
    assert response.status_code == 303
    assert db.scalar(select(OnlinePayment)).amount == 12345


def test_phone_or_email_is_needed(staff_client, db):
    response = staff_client.post("/links/new", data=form(staff_client, phone="", email=""))
    assert "Enter a mobile number or an email" in response.get_data(as_text=True)
    assert count_links(db) == 0


def test_missing_csrf_is_refused(staff_client, db):
    data = form(staff_client)
    del data["csrf_token"]
    assert staff_client.post("/links/new", data=data).status_code == 400
    assert count_links(db) == 0


def test_same_patient_is_reused(staff_client, db):
    staff_client.post("/links/new", data=form(staff_client))
    staff_client.post("/links/new", data=form(staff_client, bill_reference="B-1002",
                                              email=""))
    assert db.scalar(select(func.count()).select_from(Customer)) == 1


def test_list_is_newest_first_with_status_filter_and_pages(staff_client, build, lab, db):
    links = [build.link(lab, bill_reference=f"B-{i:03}") for i in range(30)]
    links[0].status = LinkStatus.CANCELLED
    links[1].expires_at = utcnow() - timedelta(minutes=1)
    db.commit()
    first = staff_client.get("/links").get_data(as_text=True)
    assert first.index("B-029") < first.index("B-028")
    assert "B-004" not in first and "Older links" in first
    cursor = links[5].id
    second = staff_client.get(f"/links?before={cursor}").get_data(as_text=True)
    assert "B-004" in second and "B-005" not in second
    cancelled = staff_client.get("/links?status=cancelled").get_data(as_text=True)
    assert "B-000" in cancelled and "B-002" not in cancelled
    expired = staff_client.get("/links?status=expired").get_data(as_text=True)
    assert "B-001" in expired and "B-002" not in expired
    created = staff_client.get("/links?status=created").get_data(as_text=True)
    older = re.search(r'href="(/links\?status=created&amp;before=\d+)"', created).group(1)
    created_2 = staff_client.get(older.replace("&amp;", "&")).get_data(as_text=True)
    assert "B-002" in created_2 and "B-001" not in created_2 and "B-000" not in created_2
    assert staff_client.get("/links?status=bogus").status_code == 400


def test_detail_shows_url_qr_and_cancel(staff_client, build, lab, app):
    link = build.link(lab)
    page = staff_client.get(f"/links/{link.id}").get_data(as_text=True)
    assert f'value="http://127.0.0.1:5000/pay/{link.token}"' in page
    assert f'src="/pay/{link.token}/qr.svg"' in page
    assert "Yes, cancel the link" in page and "₹1,234.50" in page


def test_cancel(staff_client, build, lab, db):
    link = build.link(lab)
    token = csrf_from(staff_client.get(f"/links/{link.id}").get_data(as_text=True))
    response = staff_client.post(f"/links/{link.id}/cancel", data={"csrf_token": token},
                                 follow_redirects=True)
    assert "The link is cancelled" in response.get_data(as_text=True)
    db.refresh(link)
    assert link.status == LinkStatus.CANCELLED and link.cancelled_at is not None
    again = staff_client.post(f"/links/{link.id}/cancel", data={"csrf_token": token},
                              follow_redirects=True)
    assert "can no longer be cancelled" in again.get_data(as_text=True)


def test_cancel_needs_post_with_csrf(staff_client, build, lab, db):
    link = build.link(lab)
    assert staff_client.get(f"/links/{link.id}/cancel").status_code == 405
    assert staff_client.post(f"/links/{link.id}/cancel").status_code == 400
    db.refresh(link)
    assert link.status == LinkStatus.CREATED


def test_expired_link_cannot_be_cancelled(staff_client, build, lab, db):
    link = build.link(lab)
    link.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    token = csrf_from(staff_client.get(f"/links/{link.id}").get_data(as_text=True))
    staff_client.post(f"/links/{link.id}/cancel", data={"csrf_token": token})
    db.refresh(link)
    assert link.status == LinkStatus.CREATED  # shown as expired; the sweep stores it later


def test_staff_are_warned_when_the_gateway_is_not_set_up(client, build):
    from tests.conftest import sign_in

    lab = build.lab("bare", sandbox_secret=None)
    user = build.user(lab, "desk@bare.test")
    sign_in(client, user.email)
    warning = "Patients cannot pay yet"
    assert warning in client.get("/links/new").get_data(as_text=True)
    link = build.link(lab)
    assert warning in client.get(f"/links/{link.id}").get_data(as_text=True)


def test_no_warning_when_the_gateway_is_ready(staff_client, build, lab):
    assert "Patients cannot pay yet" not in staff_client.get("/links/new").get_data(as_text=True)
