"""Issue 13 at the front desk: one patient per person, counter links, one-round errors, search."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from portal.models import AuditLog, Customer, Notification, OnlinePayment
from tests.api_helpers import make_api_key
from tests.conftest import csrf_from
from tests.web.test_links import form


def links_of(db) -> list[OnlinePayment]:
    return list(db.scalars(select(OnlinePayment).order_by(OnlinePayment.id)))


def customers(db) -> list[Customer]:
    return list(db.scalars(select(Customer).order_by(Customer.id)))


def test_a_shared_phone_asks_staff_and_never_renames_the_earlier_bill(staff_client, db):
    first = staff_client.post("/links/new", data=form(staff_client, patient_name="Ravi Kumar",
                                                      email="", bill_reference="B-1"))
    assert first.status_code == 303
    asked = staff_client.post("/links/new", data=form(staff_client, patient_name="Lakshmi Kumar",
                                                      email="", bill_reference="B-2"))
    page = asked.get_data(as_text=True)
    assert asked.status_code == 422 and len(links_of(db)) == 1
    assert "This mobile number or email is already on the record of Ravi Kumar." in page
    assert "Same person: Ravi Kumar" in page and "New patient: Lakshmi Kumar" in page
    assert '<a href="#patient_match">' in page  # the summary leads to the choice

    made = staff_client.post("/links/new", data=form(
        staff_client, patient_name="Lakshmi Kumar", email="", bill_reference="B-2",
        patient_match="new"))
    assert made.status_code == 303
    ravi, lakshmi = customers(db)
    assert (ravi.name, lakshmi.name) == ("Ravi Kumar", "Lakshmi Kumar")
    assert ravi.phone == lakshmi.phone == "+919876543210"
    old, new = links_of(db)
    assert (old.patient_name, old.customer_id) == ("Ravi Kumar", ravi.id)
    assert (new.patient_name, new.customer_id) == ("Lakshmi Kumar", lakshmi.id)
    assert "Ravi Kumar" in staff_client.get(f"/links/{old.id}").get_data(as_text=True)
    assert "Lakshmi" not in staff_client.get(f"/links/{old.id}").get_data(as_text=True)

    # The same name again goes under the same record without asking.
    again = staff_client.post("/links/new", data=form(
        staff_client, patient_name="  ravi   KUMAR ", email="", bill_reference="B-3"))
    assert again.status_code == 303 and links_of(db)[-1].customer_id == ravi.id
    assert len(customers(db)) == 2


def test_same_person_keeps_the_record_and_renames_only_when_asked(staff_client, db):
    staff_client.post("/links/new", data=form(staff_client, patient_name="Ravi Kumar",
                                              bill_reference="B-1"))
    [ravi] = customers(db)
    staff_client.post("/links/new", data=form(staff_client, patient_name="Ravi K.",
                                              bill_reference="B-2", patient_match=str(ravi.id)))
    db.expire_all()
    assert customers(db)[0].name == "Ravi Kumar" and links_of(db)[-1].patient_name == "Ravi K."
    staff_client.post("/links/new", data=form(staff_client, patient_name="Ravi Kumar Rao",
                                              bill_reference="B-3", patient_match=str(ravi.id),
                                              rename_patient="y"))
    db.expire_all()
    assert [c.name for c in customers(db)] == ["Ravi Kumar Rao"]
    assert [link.patient_name for link in links_of(db)] == ["Ravi Kumar", "Ravi K.",
                                                            "Ravi Kumar Rao"]
    entry = db.scalars(select(AuditLog).where(AuditLog.action == "link.create")
                       .order_by(AuditLog.id.desc())).first()
    assert entry.detail["patient_renamed"] is True


def test_another_labs_patient_cannot_be_chosen(staff_client, db, build):
    other = build.lab("other")
    stranger = build.link(other, patient_name="Someone Else", phone="+919000000001").customer
    answer = staff_client.post("/links/new", data=form(staff_client,
                                                       patient_match=str(stranger.id)))
    assert answer.status_code == 303
    link = links_of(db)[-1]
    assert link.customer_id != stranger.id and link.customer.lab_id == link.lab_id
    db.expire_all()
    assert db.get(Customer, stranger.id).name == "Someone Else"
    bad = staff_client.post("/links/new", data=form(staff_client, patient_match="x' or 1=1"))
    assert bad.status_code == 422


def test_the_api_matches_phone_and_name_else_makes_a_new_patient(client, db, lab):
    key = make_api_key(db, lab)
    body = {"amount": 5000, "currency": "INR", "bill_reference": "B-API",
            "customer": {"name": "Ravi Kumar", "phone": "+919876543210"}, "expires_in": 86400}
    headers = {"Authorization": f"Bearer {key}"}
    assert client.post("/payments/initiate", json=body, headers=headers).status_code == 201
    body["customer"] = {"name": "Lakshmi Kumar", "phone": "+919876543210",
                        "email": "lakshmi@example.com"}
    assert client.post("/payments/initiate", json=body, headers=headers).status_code == 201
    body["customer"] = {"name": "RAVI KUMAR", "phone": "+919876543210"}
    assert client.post("/payments/initiate", json=body, headers=headers).status_code == 201
    ravi, lakshmi = customers(db)
    assert (ravi.name, ravi.email, lakshmi.name) == ("Ravi Kumar", None, "Lakshmi Kumar")
    assert [link.customer_id for link in links_of(db)] == [ravi.id, lakshmi.id, ravi.id]
    assert [link.patient_name for link in links_of(db)] == ["Ravi Kumar", "Lakshmi Kumar",
                                                            "RAVI KUMAR"]


def test_a_counter_link_needs_no_phone_or_email_and_sends_nothing(staff_client, db):
    answer = staff_client.post("/links/new", data=form(staff_client, phone="", email="",
                                                       at_desk="y", send_sms="y",
                                                       send_email="y"))
    assert answer.status_code == 303
    [link] = links_of(db)
    assert (link.patient_phone, link.patient_email) == (None, None)
    assert db.scalar(select(func.count()).select_from(Notification)) == 0
    page = staff_client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Let the patient scan the QR code." in page and "qr.svg" in page


def test_every_field_error_shows_in_the_first_round(staff_client, db):
    data = form(staff_client, patient_name="", phone="", email="", amount="",
                bill_reference="")
    answer = staff_client.post("/links/new", data=data)
    page = answer.get_data(as_text=True)
    assert answer.status_code == 422
    start = page.index('id="error-summary"')
    summary = page[start:page.index("</ul>", start)]
    assert 'role="alert"' in page and 'tabindex="-1" autofocus' in page
    assert re.findall(r'<a href="#(\w+)">', summary) == ["patient_name", "phone", "amount",
                                                        "bill_reference"]
    assert "Enter a mobile number or an email to send the link to" in summary
    assert "<title>Error: New payment link" in page


def test_links_are_found_by_name_phone_or_bill_within_the_lab(staff_client, build, lab, db):
    build.link(lab, patient_name="Ravi Kumar", phone="+919876543210", bill_reference="LAB-77")
    build.link(lab, patient_name="Asha Rao", phone="+919811111111", bill_reference="OP-12",
               status="cancelled")
    other = build.lab("other")
    build.link(other, patient_name="Ravi Other", phone="+919876543210", bill_reference="LAB-99")

    def found(query: str, **args) -> str:
        answer = staff_client.get("/links", query_string={"q": query, **args})
        assert answer.status_code == 200
        return answer.get_data(as_text=True)

    assert "LAB-77" in found("ravi") and "LAB-99" not in found("ravi")
    assert "OP-12" not in found("ravi")
    assert "LAB-77" in found("098765 43210") and "OP-12" not in found("098765 43210")
    assert "LAB-77" in found("43210") and "LAB-99" not in found("43210")
    assert "OP-12" in found("op-1") and "LAB-77" not in found("op-1")
    assert "OP-12" in found("asha", status="cancelled")
    assert "OP-12" not in found("asha", status="created")
    assert "No links match “100%_”." in found("100%_")
    assert 'value="ravi"' in found("ravi")


def test_search_keeps_to_pages(staff_client, build, lab):
    for i in range(30):
        build.link(lab, patient_name="Meena Iyer", bill_reference=f"M-{i:03}")
    first = staff_client.get("/links?q=meena").get_data(as_text=True)
    older = re.search(r'href="(/links\?q=meena&amp;before=\d+)"', first).group(1)
    second = staff_client.get(older.replace("&amp;", "&")).get_data(as_text=True)
    assert "M-029" in first and "M-000" in second and "M-029" not in second


def test_new_link_for_this_patient_fills_their_details(staff_client, build, lab, db):
    patient = build.link(lab, patient_name="Lakshmi Kumar", phone="+919876543210",
                         email="lk@example.com").customer
    page = staff_client.get(f"/customers/{patient.id}").get_data(as_text=True)
    assert f'href="/links/new?customer={patient.id}"' in page
    form_page = staff_client.get(f"/links/new?customer={patient.id}").get_data(as_text=True)
    assert 'value="Lakshmi Kumar"' in form_page and 'value="+919876543210"' in form_page
    assert 'value="lk@example.com"' in form_page
    assert f'name="patient_match" value="{patient.id}"' in form_page
    other = build.link(build.lab("other"), patient_name="Not Yours").customer
    assert "Not Yours" not in staff_client.get(f"/links/new?customer={other.id}").get_data(
        as_text=True)
    for junk in ("abc", "-1", "99999999999999999999"):
        assert staff_client.get(f"/links/new?customer={junk}").status_code == 200

    # Made from that page with a new name: the link says the new name, the record keeps its.
    data = {"csrf_token": csrf_from(form_page), "patient_name": "Lakshmi K.",
            "phone": "+919876543210", "email": "lk@example.com", "amount": "500",
            "currency": "INR", "bill_reference": "B-LK", "expires_at": form(
                staff_client)["expires_at"], "patient_match": str(patient.id)}
    assert staff_client.post("/links/new", data=data).status_code == 303
    db.expire_all()
    assert links_of(db)[-1].customer_id == patient.id
    assert db.get(Customer, patient.id).name == "Lakshmi Kumar"


@pytest.mark.parametrize("old_name", ["Ravi Kumar"])
def test_old_links_keep_their_patient_after_the_record_changes(staff_client, build, lab, db,
                                                               old_name):
    link = build.link(lab, patient_name=old_name)
    link.customer.name = "Renamed Later"
    db.commit()
    assert old_name in staff_client.get(f"/links/{link.id}").get_data(as_text=True)
