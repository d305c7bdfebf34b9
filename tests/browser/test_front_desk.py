"""Issue 13 in a real browser: shared phones, counter links, the error summary, part payments,
search and a new link from a patient's page; axe-core on every page that changed.

Clicks and fields are counted as a person makes them (`Counter`), for the closing note.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import Customer, OnlinePayment
from tests.browser.test_axe import audit  # noqa: F401  the axe-core fixture

WEBHOOK_WAIT = 15_000


class Counter:
    """Fields filled and clicks made by the person at the desk."""

    def __init__(self, page):
        self.page, self.fields, self.clicks = page, 0, 0

    def fill(self, label: str, value: str, **kwargs) -> None:
        self.page.get_by_label(label, **kwargs).fill(value)
        self.fields += 1

    def check(self, label: str) -> None:
        self.page.get_by_label(label).check()
        self.fields += 1
        self.clicks += 1

    def click(self, locator) -> None:
        locator.click()
        self.clicks += 1


def new_link_page(page, live_server):
    page.goto(live_server("/links"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New link").click()
    expect(page.get_by_role("heading", name="New payment link", level=1)).to_be_visible()


def test_two_family_members_on_one_number_keep_their_own_names(audit, live_server,  # noqa: F811
                                                              staff, sign_in, db):
    page = audit.context.new_page()
    sign_in(page, staff.email)
    new_link_page(page, live_server)
    desk = Counter(page)
    desk.fill("Patient name", "Ravi Kumar")
    desk.fill("Mobile number", "98765 43210")
    desk.fill("Amount", "1,200", exact=True)
    desk.fill("Bill reference", "B-RAVI")
    desk.click(page.get_by_role("button", name="Create link"))
    expect(page.get_by_role("heading", name="Bill B-RAVI", level=1)).to_be_visible()
    print(f"\nmake and send a link: {desk.fields} fields, {desk.clicks} click(s) "
          "after opening the form")
    assert (desk.fields, desk.clicks) == (4, 1)
    ravi_url = page.url

    new_link_page(page, live_server)
    page.get_by_label("Patient name").fill("Lakshmi Kumar")
    page.get_by_label("Mobile number").fill("98765 43210")
    page.get_by_label("Amount", exact=True).fill("800")
    page.get_by_label("Bill reference").fill("B-LAKSHMI")
    page.get_by_role("button", name="Create link").click()

    summary = page.get_by_role("alert").filter(has_text="There is a problem")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("already on the record of Ravi Kumar")
    choice = page.get_by_role("group", name="Is this the same person?")
    expect(choice).to_be_visible()
    assert audit("", page=page) == []
    choice.get_by_label("New patient: Lakshmi Kumar, sharing this mobile number or email").check()
    page.get_by_role("button", name="Create link").click()
    expect(page.get_by_role("heading", name="Bill B-LAKSHMI", level=1)).to_be_visible()
    expect(page.get_by_role("definition").filter(has_text="Lakshmi Kumar")).to_be_visible()

    page.goto(ravi_url)
    details = page.locator(".facts")
    expect(details).to_contain_text("Ravi Kumar")
    expect(details).not_to_contain_text("Lakshmi")
    assert audit("", page=page) == []
    names = sorted(db.scalars(select(Customer.name)))
    assert names == ["Lakshmi Kumar", "Ravi Kumar"]


def test_a_counter_link_needs_no_phone_or_email(audit, live_server, staff, sign_in,  # noqa: F811
                                                db):
    page = audit.context.new_page()
    sign_in(page, staff.email)
    new_link_page(page, live_server)
    desk = Counter(page)
    desk.fill("Patient name", "Walk-in Patient")
    desk.fill("Amount", "450", exact=True)
    desk.fill("Bill reference", "B-DESK")
    desk.check("The patient is at the desk")
    desk.click(page.get_by_role("button", name="Create link"))
    expect(page.get_by_role("heading", name="Bill B-DESK", level=1)).to_be_visible()
    expect(page.get_by_role("status").filter(
        has_text="Let the patient scan the QR code.")).to_be_visible()
    qr = page.get_by_role("img", name="QR code of the patient URL for bill B-DESK")
    expect(qr).to_be_visible()
    print(f"\ncounter link: {desk.fields} fields (one a tick box), {desk.clicks} click(s) "
          "after opening the form")
    assert (desk.fields, desk.clicks) == (4, 2)
    assert audit("", page=page) == []
    link = db.scalar(select(OnlinePayment))
    assert (link.patient_phone, link.patient_email, link.patient_name) == (
        None, None, "Walk-in Patient")


def test_the_error_summary_takes_focus_and_links_to_each_field(audit, live_server,  # noqa: F811
                                                              staff, sign_in):
    page = audit.context.new_page()
    sign_in(page, staff.email)
    new_link_page(page, live_server)
    page.get_by_label("Email", exact=True).fill("not an email")
    page.get_by_label("Amount", exact=True).fill("12.345")
    page.get_by_role("button", name="Create link").click()

    summary = page.get_by_role("alert").filter(has_text="There is a problem")
    expect(summary).to_be_focused()
    expect(page).to_have_title(re.compile(r"^Error: New payment link"))
    links = summary.get_by_role("link")
    expected = {"Enter the patient's name.": "#patient_name",
                "Enter a valid email address.": "#email",
                "INR amounts have at most 2 decimals.": "#amount",
                "Enter the bill reference.": "#bill_reference"}
    expect(links).to_have_count(len(expected))  # every error in the first round
    for text, href in expected.items():
        link = summary.get_by_role("link", name=text)
        expect(link).to_have_attribute("href", href)
        expect(page.locator(href)).to_have_count(1)
    summary.get_by_role("link", name="INR amounts have at most 2 decimals.").click()
    expect(page).to_have_url(re.compile(r"#amount$"))
    expect(page.get_by_label("Amount", exact=True)).to_be_in_viewport()
    assert audit("", page=page) == []

    # No contact and no "at the desk": said in the same round as everything else.
    page.get_by_label("Email", exact=True).fill("")
    page.get_by_role("button", name="Create link").click()
    expect(page.get_by_role("alert").filter(has_text="There is a problem")).to_contain_text(
        "Enter a mobile number or an email to send the link to")
    expect(page.get_by_role("alert").filter(has_text="There is a problem")).to_contain_text(
        "Enter the patient's name.")


def test_a_part_payment_then_the_rest(audit, live_server, build, lab, db, staff,  # noqa: F811
                                      sign_in, new_context):
    lab.min_part_payment = 50000
    db.commit()
    link = build.link(lab, amount=300000, allow_partial=True, bill_reference="B-PART")
    patient = audit.context.new_page()
    patient.goto(live_server(f"/pay/{link.token}"))
    amount = patient.get_by_label("Amount to pay now")
    expect(amount).to_have_value("3000.00")
    assert audit("", page=patient) == []

    amount.fill("100")
    patient.get_by_role("button", name="Pay now").click()
    expect(patient.get_by_role("alert")).to_have_text("Pay at least ₹500.00.")
    expect(patient.get_by_label("Amount to pay now")).to_be_focused()
    assert audit("", page=patient) == []

    patient.get_by_label("Amount to pay now").fill("1,000")
    patient.get_by_role("button", name="Pay now").click()
    expect(patient.get_by_role("heading", level=1)).to_contain_text("₹1,000.00")  # the sandbox
    patient.get_by_role("button", name="Pay ₹1,000.00").click()
    expect(patient.get_by_role("heading", name="Payment received")).to_be_visible(
        timeout=WEBHOOK_WAIT)
    expect(patient.locator(".summary")).to_contain_text("₹2,000.00")
    assert audit("", page=patient) == []

    staff_page = new_context().new_page()
    sign_in(staff_page, staff.email)
    staff_page.goto(live_server(f"/links/{link.id}"))
    facts = staff_page.locator(".facts")
    expect(staff_page.locator(".page-head")).to_contain_text("Partly paid")
    expect(facts).to_contain_text("₹1,000.00")
    expect(facts).to_contain_text("Remaining₹2,000.00")

    patient.get_by_role("link", name="Pay now").click()
    expect(patient.get_by_role("heading", level=1)).to_contain_text("₹2,000.00")
    expect(patient.locator(".summary")).to_contain_text("Already paid")
    expect(patient.get_by_label("Amount to pay now")).to_have_value("2000.00")
    assert audit("", page=patient) == []
    patient.get_by_role("button", name="Pay now").click()
    patient.get_by_role("button", name="Pay ₹2,000.00").click()
    expect(patient.get_by_role("heading", name="Payment received")).to_be_visible(
        timeout=WEBHOOK_WAIT)
    patient.get_by_role("link", name="View your receipt").click()
    receipt = patient.get_by_role("region", name="Receipt")
    expect(receipt).to_contain_text("₹1,000.00")
    expect(receipt).to_contain_text("₹2,000.00")
    expect(receipt.locator("tbody tr.receipt__payment")).to_have_count(2)
    expect(receipt.locator("tfoot")).to_contain_text("₹3,000.00")
    expect(receipt).not_to_contain_text("Still to pay")
    assert audit("", page=patient) == []

    staff_page.reload()
    expect(staff_page.locator(".page-head")).to_contain_text("Paid")
    expect(staff_page.locator(".facts")).to_contain_text("₹3,000.00")
    expect(staff_page.locator(".facts")).not_to_contain_text("Remaining")


def test_search_and_a_new_link_for_this_patient(audit, live_server, build, lab, staff,  # noqa: F811
                                                sign_in, admin, db, new_context):
    build.link(lab, patient_name="Ravi Kumar", phone="+919876543210", bill_reference="LAB-77")
    asha = build.link(lab, patient_name="Asha Rao", phone="+919811111111",
                      bill_reference="OP-12").customer
    page = audit.context.new_page()
    sign_in(page, staff.email)
    page.goto(live_server("/links"))
    search = page.get_by_role("search", name="Find links")
    search.get_by_label("Patient name, mobile or bill").fill("98765 43210")
    search.get_by_role("button", name="Search").click()
    table = page.get_by_role("table")
    expect(table).to_contain_text("LAB-77")
    expect(table).not_to_contain_text("OP-12")
    assert audit("", page=page) == []
    search.get_by_label("Patient name, mobile or bill").fill("op-")
    search.get_by_role("button", name="Search").click()
    expect(table).to_contain_text("Asha Rao")
    expect(table).not_to_contain_text("LAB-77")

    page.goto(live_server(f"/customers/{asha.id}"))
    assert audit("", page=page) == []
    page.get_by_role("link", name="New link for this patient").click()
    expect(page.get_by_label("Patient name")).to_have_value("Asha Rao")
    expect(page.get_by_label("Mobile number")).to_have_value("+919811111111")
    expect(page.get_by_text("For the patient record of Asha Rao.")).to_be_visible()
    assert audit("", page=page) == []
    page.get_by_label("Amount", exact=True).fill("300")
    page.get_by_label("Bill reference").fill("OP-13")
    page.get_by_role("button", name="Create link").click()
    expect(page.get_by_role("heading", name="Bill OP-13", level=1)).to_be_visible()
    link = db.scalars(select(OnlinePayment).order_by(OnlinePayment.id.desc())).first()
    assert link.customer_id == asha.id

    admin_page = new_context(bypass_csp=True).new_page()
    sign_in(admin_page, admin.email)
    admin_page.goto(live_server("/admin/lab"))
    expect(admin_page.get_by_label("Smallest part payment")).to_be_visible()
    assert audit("", page=admin_page) == []
