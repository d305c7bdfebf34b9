"""Front-desk pictures for issue 13's closing note: the staff link page, the receipt and the
dashboard at phone and desktop width, on a lab with a month of seeded payments.

`make front-desk-screenshots` writes docs/front-desk/after-*.png; with
PORTAL_FRONT_DESK_SCREENSHOTS=before the same pages go to before-*.png (taken on the code before
issue 13). Without the variable the pictures go to a temporary folder: the pages still have to
render, so the script cannot rot unnoticed. Where Debian's `pngquant` is installed the pictures
are squeezed to 256 colours (a third of the size, text still crisp).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from portal.models import LinkStatus, PaymentStatus, utcnow

DOCS = Path(__file__).resolve().parents[2] / "docs" / "front-desk"
WIDTHS = {"phone": {"width": 360, "height": 740}, "desktop": {"width": 1280, "height": 800}}
GATEWAYS = ("razorpay", "sandbox", "phonepe")


@pytest.fixture
def seeded(build, db):
    """A lab in Asia/Kolkata with 30 days of paid links, one open link and one paid today."""
    lab = build.lab("sunrise", name="Sunrise Diagnostics and Research Centre",
                    timezone="Asia/Kolkata", locale="en_IN")
    user = build.user(lab, "desk@sunrise.test")
    now = utcnow()
    rng = random.Random(13)  # the same pictures every run
    for days_ago in range(30, 0, -1):
        for _ in range(rng.randint(0, 5)):
            paid_at = now - timedelta(days=days_ago, minutes=rng.randint(0, 600))
            link = build.link(lab, amount=rng.choice([45000, 120000, 250000, 89900]),
                              patient_name=rng.choice(["Ravi Kumar", "Asha Rao", "Meena Iyer"]),
                              status=LinkStatus.PAID, amount_paid=0)
            link.created_at = paid_at - timedelta(minutes=rng.randint(3, 240))
            link.amount_paid, link.paid_at = link.amount, paid_at
            build.payment(link, gateway=rng.choice(GATEWAYS), succeeded_at=paid_at,
                          card_brand="visa", card_last4="4242")
    open_link = build.link(lab, bill_reference="B-2026-000123", patient_name="Lakshmi Kumar",
                           amount=185000, description="Thyroid profile and lipid panel")
    paid = build.link(lab, bill_reference="B-2026-000124", patient_name="Ravi Kumar",
                      amount=250000, description="Complete blood count",
                      status=LinkStatus.PAID, amount_paid=250000, paid_at=now)
    build.payment(paid, status=PaymentStatus.SUCCEEDED, card_brand="visa", card_last4="4242",
                  gateway_transaction_id="pay_Nq8x2LkT4b")
    db.commit()
    return {"user": user, "open": open_link, "paid": paid}


def test_front_desk_screenshots(new_context, live_server, sign_in, seeded, tmp_path):
    stage = os.environ.get("PORTAL_FRONT_DESK_SCREENSHOTS")
    folder = DOCS if stage else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    pages = {"link": f"/links/{seeded['open'].id}",
             "receipt": f"/pay/{seeded['paid'].token}/receipt",
             "dashboard": "/"}
    for width, viewport in WIDTHS.items():
        page = new_context(viewport=viewport, device_scale_factor=1, locale="en-IN").new_page()
        sign_in(page, seeded["user"].email)
        for name, path in pages.items():
            page.goto(live_server(path))
            expect(page.locator("main")).to_be_visible()
            target = folder / f"{stage or 'after'}-{name}-{width}.png"
            page.screenshot(path=str(target), full_page=True)
            if stage and shutil.which("pngquant"):
                subprocess.run(["pngquant", "--quality=70-95", "--speed=1", "--strip",
                                "--force", "--ext", ".png", str(target)], check=True)
            assert target.stat().st_size > 5_000
        page.context.close()
