"""/links/bulk: a file of bills checked row by row, kept server-side, then created all at once."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import timedelta

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from portal.models import (
    AuditLog,
    BulkUpload,
    Customer,
    Job,
    Notification,
    OnlinePayment,
    Role,
    utcnow,
)
from portal.services import bulk
from tests.conftest import csrf_from, sign_in

HEADER = "name,phone,email,amount,currency,bill_reference,expiry,language,description,send"


def upload(client, content: bytes | str, filename: str = "bills.csv"):
    if isinstance(content, str):
        content = content.encode()
    token = csrf_from(client.get("/links/bulk").get_data(as_text=True))
    return client.post("/links/bulk", data={"csrf_token": token,
                                             "file": (io.BytesIO(content), filename)},
                       content_type="multipart/form-data")


def review_path(response) -> str:
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    return response.headers["Location"]


def create(client, path: str, **fields):
    token = csrf_from(client.get(path).get_data(as_text=True))
    data = {"csrf_token": token, **{k: "y" for k, v in fields.items() if v}}
    return client.post(f"{path}/create", data=data)


def rows_csv(n: int, start: int = 1, sep: str = ",") -> str:
    lines = [HEADER.replace(",", sep)]
    for i in range(start, start + n):
        lines.append(sep.join([f"Patient {i}", f"+9198{i:08d}", "", "1,250.50" if sep == ";"
                               and False else "1250.50", "", f"B-{i}", "", "", "", ""]))
    return "\n".join(lines) + "\n"


def links(db) -> list[OnlinePayment]:
    return list(db.scalars(select(OnlinePayment).order_by(OnlinePayment.id)))


def count(db, model) -> int:
    return db.scalar(select(func.count()).select_from(model))


def problems(html: str) -> list[tuple[str, str, str]]:
    """(row, column, message) of the problems table."""
    body = html.split("Problems found, by row of the file", 1)[1].split("</table>", 1)[0]
    return [(r, c, re.sub(r"\s+", " ", m).strip()) for r, c, m in re.findall(
        r'<tr><td class="num">(\d+)</td><td><code>([a-z_]+)</code></td><td>(.*?)</td></tr>',
        body)]


def test_page_documents_columns_and_offers_template(staff_client):
    page = staff_client.get("/links/bulk").get_data(as_text=True)
    for column in bulk.COLUMNS:
        assert f"<code>{column}</code>" in page
    template = staff_client.get("/links/bulk/template.csv")
    assert template.status_code == 200 and template.mimetype == "text/csv"
    text = template.get_data(as_text=True)
    assert text.startswith("\ufeff" + "name,phone,email,amount")


def test_good_file_is_checked_then_created_with_the_link_service(staff_client, db, lab, staff):
    content = (HEADER + "\n"
               "Asha Rao,+91 98765 43210,asha@example.com,\"1,250.50\",,B-1,,hi,Home visit,yes\n"
               "Ravi Kumar,98765 43211,,800,,B-2,2026-12-31,,,no\n")
    lab.reminder_hours_before = [24]
    db.commit()
    path = review_path(upload(staff_client, content))
    page = staff_client.get(path).get_data(as_text=True)
    assert "Create 2 links" in page and "Problems found" not in page
    assert count(db, OnlinePayment) == 0  # nothing until confirmed
    response = create(staff_client, path)
    assert response.status_code == 303
    made = links(db)
    assert [(x.bill_reference, x.amount, x.currency, x.language) for x in made] == [
        ("B-1", 125050, "INR", "hi"), ("B-2", 80000, "INR", "en")]
    assert made[0].customer.phone == "+919876543210" and made[0].created_by_id == staff.id
    assert made[0].description == "Home visit"
    # row 2 says 2026-12-31 in the lab's zone (Asia/Kolkata): the end of that day
    assert made[1].expires_at.strftime("%Y-%m-%d %H:%M") == "2026-12-31 18:29"
    # row 1 asked to send: both of its contacts; row 2 said no, the page's default was off
    sent = db.scalars(select(Notification)).all()
    assert sorted((n.online_payment_id, n.channel.value) for n in sent) == [
        (made[0].id, "email"), (made[0].id, "sms")]
    assert count(db, AuditLog) >= 3  # one per link, and the batch
    assert db.scalar(select(func.count()).select_from(Job).where(
        Job.kind == "notification.reminder")) == 2  # reminders as on /links/new
    done = staff_client.get(path).get_data(as_text=True)
    assert "2 of 2 rows have their link" in done
    upload_row = db.scalar(select(BulkUpload))
    assert upload_row.rows == [] and upload_row.completed_at is not None


def test_default_send_and_missing_contact(staff_client, db):
    content = ("name,phone,email,amount,bill_reference\n"
               "Asha Rao,+919876543210,,100,B-1\nRavi,,ravi@example.com,200,B-2\n")
    path = review_path(upload(staff_client, content))
    assert create(staff_client, path, send=True).status_code == 303
    sent = sorted((n.recipient, n.channel.value) for n in db.scalars(select(Notification)))
    assert sent == [("+919876543210", "sms"), ("ravi@example.com", "email")]


def test_bad_rows_are_listed_and_nothing_is_created_until_dropped(staff_client, db, build, lab):
    build.link(lab, bill_reference="OLD-7")
    before = count(db, OnlinePayment)
    content = (HEADER + "\n"
               "Asha,+919876543210,,100,,B-1,,,,\n"
               ",+919876543210,,100,,B-2,,,,\n"            # row 3: no name
               "Ravi,12,,abc,,B-3,,,,\n"                   # row 4: phone and amount
               "Meera,,,-5,,B-4,,,,\n"                     # row 5: no contact, negative
               "Karan,+919876543211,,100,XYZ,B-5,,,,\n"    # row 6: currency
               "Anita,+919876543212,,100.555,,B-6,,,,\n"   # row 7: decimals
               "Vikram,+919876543213,,100,,old-7,,,,\n"    # row 8: bill has a link
               "Sunita,+919876543214,,100,,b-1,,,,\n"      # row 9: same bill as row 2
               "Priya,+919876543215,,100,,B-9,2020-01-01,xx,,maybe\n"  # row 10
               "Arjun,+919876543216,bad@,100,,B-10,,,,\n"  # row 11: email
               "Rahul,+919876543217,,100,,B-11,,,,\n")
    path = review_path(upload(staff_client, content))
    page = staff_client.get(path).get_data(as_text=True)
    found = problems(page)
    columns = {(r, c) for r, c, _ in found}
    assert columns == {("3", "name"), ("4", "phone"), ("4", "amount"), ("5", "phone"),
                       ("5", "amount"), ("6", "currency"), ("7", "amount"),
                       ("8", "bill_reference"), ("9", "bill_reference"), ("10", "expiry"),
                       ("10", "language"), ("10", "send"), ("11", "email")}
    messages = {(r, c): m for r, c, m in found}
    assert messages[("9", "bill_reference")] == "Same bill reference as row 2."
    assert messages[("8", "bill_reference")].startswith("This bill already has a link (#")
    assert messages[("7", "amount")] == "INR amounts have at most 2 decimals."
    assert "Create 2 links" in page and "Leave out the rows with problems" in page
    listed = list(csv.reader(io.StringIO(staff_client.get(f"{path}/problems.csv")
                                         .get_data(as_text=True).lstrip("\ufeff"))))
    assert listed[0] == ["row", "column", "problem", "value"]
    assert {(r[0], r[1]) for r in listed[1:]} == columns
    assert ["4", "amount", "Enter the amount as a number, for example 1250.50.", "abc"] in listed
    assert ["5", "amount", "The amount must be more than zero.", "'-5"] in listed
    refused = create(staff_client, path)
    assert refused.status_code == 422
    assert "Some rows have problems" in refused.get_data(as_text=True)
    assert count(db, OnlinePayment) == before
    assert create(staff_client, path, drop_bad=True).status_code == 303
    assert [x.bill_reference for x in links(db)][before:] == ["B-1", "B-11"]
    result = staff_client.get(f"{path}/result.csv")
    lines = list(csv.DictReader(io.StringIO(result.get_data(as_text=True).lstrip("\ufeff"))))
    assert [(r["row"], r["result"]) for r in lines] == [
        ("2", "created"), ("3", "not created"), ("4", "not created"), ("5", "not created"),
        ("6", "not created"), ("7", "not created"), ("8", "not created"),
        ("9", "not created"), ("10", "not created"), ("11", "not created"),
        ("12", "created")]
    made = links(db)[before:]
    assert lines[0]["link_id"] == str(made[0].id)
    assert lines[0]["url"] == f"http://127.0.0.1:5000/pay/{made[0].token}"
    assert lines[3]["problems"].startswith("phone: Enter a mobile number")


def test_pressing_create_twice_creates_once(staff_client, db):
    path = review_path(upload(staff_client, rows_csv(3)))
    token = csrf_from(staff_client.get(path).get_data(as_text=True))
    assert staff_client.post(f"{path}/create", data={"csrf_token": token}).status_code == 303
    again = staff_client.post(f"{path}/create", data={"csrf_token": token})
    assert again.status_code == 422
    assert count(db, OnlinePayment) == 3


def test_amounts_come_from_the_checked_rows_not_the_form(staff_client, db):
    path = review_path(upload(staff_client, rows_csv(1)))
    token = csrf_from(staff_client.get(path).get_data(as_text=True))
    staff_client.post(f"{path}/create", data={"csrf_token": token, "amount": "1",
                                              "rows": '[{"amount": 1}]'})
    assert [x.amount for x in links(db)] == [125050]


def test_a_row_gone_bad_since_the_check_stops_the_create(staff_client, db, build, lab):
    path = review_path(upload(staff_client, rows_csv(2)))
    build.link(lab, bill_reference="b-2")  # made elsewhere meanwhile
    response = create(staff_client, path)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "no longer valid since the check" in page
    assert ("3", "bill_reference") in {(r, c) for r, c, _ in problems(page)}
    assert count(db, OnlinePayment) == 1
    assert create(staff_client, path, drop_bad=True).status_code == 303
    assert sorted(x.bill_reference for x in links(db)) == ["B-1", "b-2"]


def test_csv_with_bom_semicolons_and_excel_quoting(staff_client, db):
    content = ("\ufeffname;phone;amount;bill_reference;description\r\n"
               "\"Rao; Asha\";+919876543210;\"1.250,50\";B-1;x\r\n"
               "\"O\"\"Brien\";+919876543211;\"1,250.50\";B-2;\"two\r\nlines\"\r\n"
               ";;;;\r\n")
    path = review_path(upload(staff_client, content.encode("utf-8")))
    page = staff_client.get(path).get_data(as_text=True)
    # "1.250,50" is not how this lab writes amounts: refused, not misread as 1.25
    assert problems(page) == [("2", "amount", "INR amounts have at most 2 decimals.")]
    assert create(staff_client, path, drop_bad=True).status_code == 303
    [link] = links(db)
    assert (link.customer.name, link.amount, link.description) == ("O\"Brien", 125050,
                                                                   "two\r\nlines")


def test_xlsx_values_are_read_and_formula_cells_refused(staff_client, db):
    book = Workbook()
    sheet = book.active
    sheet.append(["Name", "Mobile", "Amount", "Bill reference", "Expiry", "Send"])
    sheet.append(["Asha Rao", 919876543210, 1250.5, "B-1", None, True])
    sheet.append(["Ravi", "+919876543211", "=2*400", "B-2", None, None])
    sheet.append(["=HYPERLINK(\"http://evil\",\"x\")", "+919876543212", 5, 1003, None, None])
    sheet.append(["Meera", "+919876543213", 700, "B-4", utcnow().replace(tzinfo=None)
                  + timedelta(days=10), "no"])
    data = io.BytesIO()
    book.save(data)
    path = review_path(upload(staff_client, data.getvalue(), "bills.xlsx"))
    page = staff_client.get(path).get_data(as_text=True)
    assert {(r, c) for r, c, _ in problems(page)} == {("3", "amount"), ("4", "name")}
    assert "holds a formula" in page
    assert create(staff_client, path, drop_bad=True).status_code == 303
    made = links(db)
    assert [(x.bill_reference, x.amount) for x in made] == [("B-1", 125050), ("B-4", 70000)]
    assert made[0].customer.phone == "+919876543210"
    # row 2's TRUE: send, by SMS as it has no email; row 5 said no
    assert [(n.online_payment_id, n.channel.value) for n in db.scalars(select(Notification))
            ] == [(made[0].id, "sms")]


def test_formula_text_in_a_csv_is_kept_as_text_and_escaped_in_the_result(staff_client, db):
    content = ("name,phone,amount,bill_reference,description\n"
               "\"=cmd|' /C calc'!A0\",+919876543210,100,@SUM(1+1),\"+x\"\n"
               "-Asha,+919876543211,100,\"\tB-2\",\n")
    path = review_path(upload(staff_client, content))
    assert create(staff_client, path).status_code == 303
    made = links(db)
    assert made[0].customer.name == "=cmd|' /C calc'!A0"  # stored as typed
    text = staff_client.get(f"{path}/result.csv").get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[1][4] == "'=cmd|' /C calc'!A0" and rows[1][5] == "'@SUM(1+1)"
    assert rows[2][4] == "'-Asha"
    for row in rows[1:]:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)


@pytest.mark.parametrize(("content", "filename", "message"), [
    (b"", "a.csv", "Choose a CSV or XLSX file."),
    (b"   \n\n", "a.csv", "The file is empty."),
    (b"name,phone,amount,bill_reference\n", "a.csv", "no rows of bills"),
    (b"phone,amount\n1,2\n", "a.csv", "missing: name, bill_reference"),
    (b"name,amount,bill_reference\nA,1,B\n", "a.csv", "Add a phone or an email column"),
    (b"name,name,phone,amount,bill_reference\n", "a.csv", "appears twice"),
    ("name,phone,amount,bill_reference\nAsha,1,2,B\n".encode("utf-16"), "a.csv",
     "not UTF-8"),
    (b"\xff\xfe\x00garbage\x80\x81", "a.csv", "not UTF-8"),
    (b"PK\x03\x04" + b"\x00" * 100, "a.xlsx", "cannot be opened"),
    (b"just some text", "a.xlsx", "not an Excel workbook"),
    (b"name,phone,amount,bill_reference\n\"" + b"x" * 200_000 + b"\"\n", "a.csv",
     "cannot be read"),
])
def test_unreadable_files_are_refused_with_a_message(staff_client, db, content, filename,
                                                     message):
    token = csrf_from(staff_client.get("/links/bulk").get_data(as_text=True))
    data = {"csrf_token": token}
    if content:
        data["file"] = (io.BytesIO(content), filename)
    response = staff_client.post("/links/bulk", data=data, content_type="multipart/form-data")
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert count(db, BulkUpload) == 0


def test_hostile_bytes_in_cells_are_row_problems_not_errors(staff_client, db):
    content = ("name,phone,amount,bill_reference\n"
               "A\x00sha,+919876543210,100,B-1\n"
               "R\x1b[31mavi,+919876543211,100,B-2\n"
               "Meera,+919876543212,100,B-3\u202e\n"
               "Karan,+919876543213,1e9999,B-4\n"
               "Vikram,+919876543214," + "9" * 40 + ",B-5\n"
               + "Priya,+919876543215,100," + "x" * 5000 + "\n"
               + "\"Two\nLines\",+919876543216,100,B-8\n").encode()
    path = review_path(upload(staff_client, content))
    page = staff_client.get(path).get_data(as_text=True)
    assert {(r, c) for r, c, _ in problems(page)} == {
        ("2", "name"), ("3", "name"), ("5", "amount"), ("6", "amount"),
        ("7", "bill_reference"), ("8", "name")}
    stored = db.scalar(select(BulkUpload))
    assert "\x00" not in str(stored.rows)
    assert create(staff_client, path, drop_bad=True).status_code == 303
    assert [x.bill_reference for x in links(db)] == ["B-3\u202e"]


def test_xlsx_zip_bomb_is_refused_unread(staff_client, db):
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"\x00" * (bulk.MAX_UNPACKED_BYTES + 1))
    response = upload(staff_client, data.getvalue(), "bomb.xlsx")
    assert response.status_code == 422
    assert "unpacks to more than" in response.get_data(as_text=True)


def test_limits_on_size_and_rows(staff_client, db, app):
    too_big = b"name,phone,amount,bill_reference\n" + b"x" * (bulk.MAX_FILE_BYTES + 10)
    response = upload(staff_client, too_big)
    assert response.status_code == 422
    assert "larger than 5 MB" in response.get_data(as_text=True)
    way_too_big = b"x" * (bulk.MAX_FILE_BYTES + 4 * 1024 * 1024)
    assert upload(staff_client, way_too_big).status_code == 413
    too_many = rows_csv(bulk.MAX_ROWS + 1)
    response = upload(staff_client, too_many)
    assert response.status_code == 422
    assert "more than 10,000 rows" in response.get_data(as_text=True)
    # other forms keep the app's own limit
    token = csrf_from(staff_client.get("/links/new").get_data(as_text=True))
    assert staff_client.post("/links/new", data={"csrf_token": token,
                                                 "description": "x" * 2_000_000}
                             ).status_code == 413


def test_ten_thousand_rows_are_accepted(staff_client, db):
    path = review_path(upload(staff_client, rows_csv(bulk.MAX_ROWS)))
    assert "Create 10,000 links" in staff_client.get(path).get_data(as_text=True)
    assert create(staff_client, path).status_code == 303
    assert count(db, OnlinePayment) == bulk.MAX_ROWS
    # one patient per phone: 10,000 customers, each link with its own
    assert count(db, Customer) == bulk.MAX_ROWS
    text = staff_client.get(f"{path}/result.csv").get_data(as_text=True)
    assert text.count("\n") == bulk.MAX_ROWS + 1


def test_an_upload_belongs_to_its_uploader_and_lab(app, staff_client, db, build, lab):
    path = review_path(upload(staff_client, rows_csv(1)))
    colleague = build.user(lab, "admin2@acme.test", role=Role.ADMIN)
    other_lab = build.lab("other")
    outsider = build.user(other_lab, "staff@other.test")
    for user in (colleague, outsider):
        client = app.test_client()
        assert sign_in(client, user.email).status_code == 302
        assert client.get(path).status_code == 404
        assert client.get(f"{path}/result.csv").status_code == 404
        token = csrf_from(client.get("/links/bulk").get_data(as_text=True))
        assert client.post(f"{path}/create", data={"csrf_token": token}).status_code == 404
    assert count(db, OnlinePayment) == 0


def test_expired_uploads_are_not_found_and_are_purged(staff_client, db):
    path = review_path(upload(staff_client, rows_csv(1)))
    stored = db.scalar(select(BulkUpload))
    stored.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    assert staff_client.get(path).status_code == 404
    review_path(upload(staff_client, rows_csv(1)))
    assert count(db, BulkUpload) == 1  # the old one went with the new upload


def test_result_file_only_after_creation_and_login_needed(client, staff_client, db):
    path = review_path(upload(staff_client, rows_csv(1)))
    assert staff_client.get(f"{path}/result.csv").status_code == 404
    anonymous = client.application.test_client()
    assert anonymous.get("/links/bulk").status_code == 302
    assert anonymous.get(path).status_code == 302
