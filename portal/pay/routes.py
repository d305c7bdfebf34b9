"""The patient's pages. No login: the link's token is the capability."""

import re
from urllib.parse import urlencode

from flask import Response, abort, current_app, jsonify, redirect, render_template, request

from gateways import GATEWAYS
from gateways.base import Capability, GatewayError

from .. import i18n, qr
from ..extensions import csrf, db_session, read_only_view
from ..filters import patient_money
from ..models import OPEN_LINK_STATES, SETTLED_PAYMENT_STATES, LinkStatus, PaymentStatus
from ..money import MAX_MINOR, MoneyError, major_string, parse_amount
from ..services.checkout import (
    AmountRefused,
    NotPayable,
    handle_return,
    smallest_payment,
    start_checkout,
)
from ..services.links import get_link_by_token
from ..services.receipt_pdf import ReceiptFontsMissing, render_pdf
from ..services.receipts import build_receipt
from ..tokens import patient_url
from . import bp, formtoken, pagecache


def _link(token: str):
    link = get_link_by_token(db_session(), token) or abort(404)
    i18n.use(i18n.choose(link.language, link.lab.default_language))
    return link


bp.after_request(i18n.remember)


def _patient_url(token: str) -> str:
    return patient_url(current_app.config["PORTAL_BASE_URL"], token)


def _page(link, *, error: str | None = None, status_code: int = 200,
          amount_error: str | None = None, amount_text: str | None = None):
    status = link.effective_status()
    template = {
        LinkStatus.PAID: "pay/paid.html",
        LinkStatus.EXPIRED: "pay/expired.html",
        LinkStatus.CANCELLED: "pay/cancelled.html",
    }.get(status, "pay/page.html")
    return render_template(
        template, link=link, lab=link.lab, status=status, error=error,
        form_token=formtoken.form_token(link.token) if template == "pay/page.html" else None,
        can_save=_can_save(link), settled=link.settled_payments,
        receipt=build_receipt(link) if status == LinkStatus.PAID else None,
        gateway=GATEWAYS.get(link.gateway), part=_part_payment(link),
        amount_error=amount_error, amount_text=amount_text), status_code


def _part_payment(link) -> dict | None:
    """The least and most the patient may type, when the link takes part payments."""
    if not link.allow_partial or link.outstanding <= smallest_payment(link):
        return None
    return {"min": smallest_payment(link), "max": link.outstanding,
            "initial": major_string(link.outstanding, link.currency)}


class AmountTyped(Exception):
    """What the patient typed is not an amount; the message is in their language."""


def _typed_amount(link) -> int | None:
    """The part the patient chose, in minor units; None: pay all that is outstanding."""
    if not link.allow_partial or "amount" not in request.form:
        return None
    text = request.form["amount"][:60]  # no amount a bill can owe is longer
    try:
        return parse_amount(text, link.currency)
    except MoneyError as exc:
        if exc.code == "empty":
            raise AmountTyped(i18n.gettext("Enter the amount you want to pay.")) from None
        if exc.code == "too_large":
            return MAX_MINOR + 1  # refused as more than what is owed
        if exc.code == "not_positive" and not text.strip().startswith("-"):
            return 0  # refused as less than the least
        raise AmountTyped(i18n.gettext(
            "Enter the amount as a number, for example %(example)s.",
            example=major_string(link.outstanding, link.currency))) from None


def _refused_amount(link, exc: AmountRefused) -> str:
    limit = patient_money(exc.limit, link.currency, link.lab)
    if exc.code == "below_minimum":
        return i18n.gettext("Pay at least %(amount)s.", amount=limit)
    return i18n.gettext("Pay at most %(amount)s: that is what is still owed.", amount=limit)


def _can_save(link) -> bool:
    """Saving needs a gateway that stores methods and a patient record to keep it under."""
    gateway = GATEWAYS.get(link.gateway)
    return bool(gateway and Capability.SAVED_METHODS in gateway.capabilities
                and link.customer_id is not None)


@bp.get("/pay/<token>")
@read_only_view
def page(token: str):
    """Rendered once, then reused while one query finds nothing changed (pagecache.py)."""
    cache = _page_cache()
    # Everything of the request the page depends on: the language comes from these and from
    # the link and lab, which the version covers.
    key = (token, request.full_path, request.cookies.get(i18n.COOKIE),
           request.headers.get("Accept-Language"))
    version = pagecache.current_version(current_app.extensions["portal_db"].engine, token)
    if version is None:
        abort(404)
    cached = cache.get(key, version)
    if cached is not None:
        i18n.use(i18n.choose(version.language, version.lab_language))
        return cached
    link = _link(token)
    body, status_code = _page(link)
    cache.put(key, version, link, (body, status_code))
    return body, status_code


def _page_cache() -> pagecache.PageCache:
    cache = current_app.extensions.get("portal_pay_pages")
    if cache is None:
        cache = current_app.extensions["portal_pay_pages"] = pagecache.PageCache()
    return cache


@bp.post("/pay/<token>")
@csrf.exempt  # the Pay form carries its own session-free token (formtoken.py)
def start(token: str):
    link = _link(token)
    formtoken.check(link.token)
    session = db_session()
    typed = (request.form.get("amount") or "")[:60]
    try:
        amount = _typed_amount(link)
        started = start_checkout(session, current_app.config, link, amount=amount,
                                 save_method=_can_save(link)
                                 and request.form.get("save_method") == "yes")
    except AmountTyped as exc:
        return _page(link, amount_error=str(exc), amount_text=typed, status_code=422)
    except AmountRefused as exc:
        session.rollback()
        link = _link(token)
        return _page(link, amount_error=_refused_amount(link, exc), amount_text=typed,
                     status_code=422)
    except NotPayable:
        session.rollback()
        return _page(link, status_code=409)
    except GatewayError as exc:
        session.rollback()
        current_app.logger.warning("checkout for link %s failed: %s", link.id, exc.code)
        message = (i18n.gettext("Online payment is not available for this bill right now. "
                                "Please contact the lab.") if exc.code == "not_configured" else
                   i18n.gettext("We could not reach the payment service. "
                                "Please try again in a minute."))
        return _page(link, error=message, status_code=503)
    checkout = started.checkout
    if checkout.form is not None:
        return render_template("pay/redirect_form.html", form=checkout.form, link=link,
                               lab=link.lab)
    url = checkout.redirect_url
    if link.gateway == "sandbox":  # our own hosted page: it speaks the patient's language too
        url += ("&" if "?" in url else "?") + urlencode({"lang": i18n.current()})
    return redirect(url, 303)


@bp.get("/pay/<token>/return")
def back(token: str):
    link = _link(token)
    session = db_session()
    payment = handle_return(session, current_app.config, link, request.args)
    session.refresh(link)
    status = link.effective_status()
    settled = payment is not None and payment.status in SETTLED_PAYMENT_STATES
    if status == LinkStatus.PAID or settled:
        outcome = "paid"
    elif payment is not None and payment.status == PaymentStatus.FAILED:
        outcome = "failed"
    elif payment is None:
        return redirect(f"/pay/{token}", 303)
    else:
        outcome = "processing"
    return render_template("pay/return.html", link=link, lab=link.lab, payment=payment,
                           outcome=outcome, status=status)


@bp.post("/pay/<token>/return")
@csrf.exempt  # posted by the gateway's page (PayTabs signs its form); trusted only if verified
def back_posted(token: str):
    """The patient's browser is POSTed back with the gateway's form: checked, then shown by GET."""
    link = _link(token)
    handle_return(db_session(), current_app.config, link,
                  {**request.form.to_dict(), **request.args.to_dict()})
    return redirect(request.full_path, 303)  # the same URL, as a GET the patient can reload


@bp.get("/pay/<token>/status.json")
@read_only_view
def status_json(token: str):
    link = _link(token)
    latest = link.payments[-1] if link.payments else None
    return jsonify(
        status=link.effective_status().value, amount=link.amount, currency=link.currency,
        amount_paid=link.amount_paid, outstanding=link.outstanding,
        expires_at=link.expires_at.isoformat(),
        latest_payment=None if latest is None else {"reference": latest.reference,
                                                    "status": latest.status.value},
    )


def _payable_link(token: str):
    """A link whose QR code may still be handed out: paid, expired and cancelled ones are gone."""
    link = _link(token)
    if link.effective_status() not in OPEN_LINK_STATES:
        abort(410, "This link can no longer be paid, so it has no QR code.")
    return link


@bp.get("/pay/<token>/qr.svg")
@read_only_view
def qr_svg(token: str):
    link = _payable_link(token)
    return Response(qr.svg(_patient_url(link.token)), mimetype="image/svg+xml")


@bp.get("/pay/<token>/qr.png")
@read_only_view
def qr_png(token: str):
    link = _payable_link(token)
    return Response(qr.png(_patient_url(link.token)), mimetype="image/png")


def _receipt(token: str):
    link = _link(token)
    return link, build_receipt(link) or abort(404)


@bp.get("/pay/<token>/receipt")
@read_only_view
def receipt(token: str):
    link, receipt = _receipt(token)
    return render_template("pay/receipt.html", link=link, lab=link.lab, receipt=receipt)


@bp.get("/pay/<token>/receipt.pdf")
def receipt_pdf(token: str):
    link, receipt = _receipt(token)
    lab = link.lab
    try:
        pdf = render_pdf(receipt, language=i18n.current(), lab_locale=lab.locale,
                         timezone=lab.timezone)
    except ReceiptFontsMissing as exc:
        current_app.logger.error("receipt PDF for link %s not made: %s", link.id, exc)
        return render_template(
            "pay/error.html", code=503, lab=lab,
            title=i18n.gettext("The PDF receipt is not available right now"),
            message=i18n.gettext("Please use the printable receipt page instead.")), 503
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", link.bill_reference).strip("-") or "bill"
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="receipt-{name}.pdf"'
    response.headers["Cache-Control"] = "private, no-store"
    return response
