"""Links in bulk in a browser, as a front desk does it: upload, read the problems, leave out the
bad rows, create, download the result. axe on every step."""

from __future__ import annotations

import csv
import io

from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import OnlinePayment
from tests.browser.test_axe import audit  # noqa: F401  the fixture

FILE = ("name,phone,email,amount,bill_reference,send\n"
        "Asha Rao,+919876543210,asha@example.com,\"1,250.50\",B-1,no\n"
        "Ravi Kumar,12345,,800,B-2,no\n"
        "Meera Iyer,+919876543212,,=1+1,B-3,no\n"
        "Karan Das,+919876543213,,450,B-1,no\n"
        "Priya Nair,+919876543214,,99.99,B-5,\n")


def test_upload_see_problems_drop_them_create_and_download(audit, live_server,  # noqa: F811
                                                           staff, db, tmp_path):
    page = audit.context.new_page()
    page.goto(live_server("/login"))
    page.get_by_label("Email").fill(staff.email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    page.goto(live_server("/links"))
    page.get_by_role("link", name="Links in bulk").click()
    expect(page.get_by_role("heading", name="Links in bulk")).to_be_visible()
    assert audit("", page=page) == []
    with page.expect_download() as template:
        page.get_by_role("link", name="Download the template (CSV)").click()
    assert template.value.suggested_filename == "links-template.csv"

    page.get_by_role("button", name="Check the file").click()  # no file chosen
    expect(page.get_by_role("alert")).to_contain_text("Choose a CSV or XLSX file.")
    assert audit("", page=page) == []

    path = tmp_path / "round.csv"
    path.write_text(FILE, encoding="utf-8")
    page.get_by_label("File of bills (CSV or XLSX)").set_input_files(str(path))
    page.get_by_role("button", name="Check the file").click()
    expect(page.get_by_role("heading", name="Problems")).to_be_visible()
    problems = page.get_by_role("table", name="Problems found, by row of the file")
    expect(problems.get_by_role("row")).to_have_count(4)  # heading + 3 problems
    expect(problems).to_contain_text("Enter a valid mobile number.")
    expect(problems).to_contain_text("Same bill reference as row 2.")
    expect(problems).to_contain_text("Enter the amount as a number")
    assert audit("", page=page) == []

    page.get_by_role("button", name="Create 2 links").click()  # bad rows not yet dropped
    expect(page.get_by_role("alert")).to_contain_text("Some rows have problems")
    assert db.scalars(select(OnlinePayment)).all() == []
    assert audit("", page=page) == []

    page.get_by_label("Leave out the rows with problems").check()
    page.get_by_role("button", name="Create 2 links").click()
    expect(page.get_by_role("status")).to_contain_text("2 payment links created.")
    expect(page.get_by_text("2 of 5 rows have their link.")).to_be_visible()
    assert audit("", page=page) == []

    with page.expect_download() as result:
        page.get_by_role("link", name="Download the result (CSV)").click()
    text = open(result.value.path(), encoding="utf-8-sig").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    made = db.scalars(select(OnlinePayment).order_by(OnlinePayment.id)).all()
    assert [(r["row"], r["result"], r["link_id"]) for r in rows] == [
        ("2", "created", str(made[0].id)), ("3", "not created", ""),
        ("4", "not created", ""), ("5", "not created", ""),
        ("6", "created", str(made[1].id))]
    assert rows[0]["url"] == live_server(f"/pay/{made[0].token}")
    assert rows[3]["name"] == "Karan Das"
    page.goto(rows[0]["url"])  # the patient's page of the first link
    expect(page.locator("dl").get_by_text("B-1")).to_be_visible()
    expect(page.get_by_text("₹1,250.50").first).to_be_visible()
