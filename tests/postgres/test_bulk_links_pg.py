"""Links in bulk on PostgreSQL: the upload's JSON rows, all-or-nothing creation, and two
presses of Create at the same moment making the links once."""

from __future__ import annotations

import io
import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.models import BulkUpload, OnlinePayment, Role
from tests.conftest import Builder, csrf_from, sign_in

CSV = ("name,phone,email,amount,bill_reference,description\n"
       "Asha Rao,+919876543210,,\"1,250.50\",B-1,\"Ünïcode — ✓\"\n"
       "Ravi Kumar,+919876543211,ravi@example.com,800,B-2,\n"
       "Bad\x00Name,+919876543212,,100,B-3,\n")


def signed_in(app, user):
    client = app.test_client()
    assert sign_in(client, user.email).status_code == 302
    return client


def test_two_presses_of_create_at_once_make_the_links_once(pg_app):
    # Sessions of our own, outside any app context: the requests below push theirs.
    engine = pg_app.extensions["portal_db"].engine
    pg_db = Session(engine, expire_on_commit=False)
    build = Builder(pg_app, pg_db)
    lab = build.lab("acme")
    user = build.user(lab, "staff@acme.test", role=Role.STAFF)
    client = signed_in(pg_app, user)
    token = csrf_from(client.get("/links/bulk").get_data(as_text=True))
    checked = client.post("/links/bulk", data={"csrf_token": token,
                                               "file": (io.BytesIO(CSV.encode()), "a.csv")},
                          content_type="multipart/form-data")
    assert checked.status_code == 303
    path = checked.headers["Location"]
    stored = pg_db.scalar(select(BulkUpload))
    assert stored.bad_count == 1 and "\x00" not in str(stored.rows)
    pg_db.rollback()

    form = csrf_from(client.get(path).get_data(as_text=True))
    clients = [signed_in(pg_app, user) for _ in range(2)]
    tokens = [csrf_from(c.get(path).get_data(as_text=True)) for c in clients]
    statuses: list[int] = []
    barrier = threading.Barrier(2)

    def press(c, t):
        barrier.wait()
        statuses.append(c.post(f"{path}/create", data={"csrf_token": t,
                                                       "drop_bad": "y"}).status_code)

    threads = [threading.Thread(target=press, args=pair)
               for pair in zip(clients, tokens, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [303, 422]
    pg_db.rollback()
    assert pg_db.scalar(select(func.count()).select_from(OnlinePayment)) == 2
    again = client.post(f"{path}/create", data={"csrf_token": form, "drop_bad": "y"})
    assert again.status_code == 422
    pg_db.rollback()
    made = pg_db.scalars(select(OnlinePayment).order_by(OnlinePayment.id)).all()
    assert [(x.bill_reference, x.amount, x.description) for x in made] == [
        ("B-1", 125050, "Ünïcode — ✓"), ("B-2", 80000, "")]
    result = client.get(f"{path}/result.csv").get_data(as_text=True)
    assert result.count("\n") == 4 and "not created" in result
    pg_db.close()
