"""Transactions: every payment of the lab, filtered, paged by keyset, exported as CSV."""

from flask import Response, abort, render_template, request, stream_with_context
from flask_login import current_user, login_required

from ..extensions import db_session
from ..models import utcnow
from ..services.audit import audit
from ..services.transactions import (
    Cursor,
    CursorError,
    currency_totals,
    export_csv,
    get_transaction,
    list_transactions,
    payment_timeline,
)
from ..tenancy import client_ip, current_lab
from . import bp
from .forms import TransactionFilterForm


def _filter_form(lab) -> TransactionFilterForm:
    return TransactionFilterForm(request.args, lab=lab)


@bp.get("/transactions")
@login_required
def index():
    lab = current_lab()
    form = _filter_form(lab)
    if not form.validate():
        return render_template("transactions/index.html", form=form, lab=lab, page=None,
                               totals=[], args={}), 422
    cursor = None
    if request.args.get("cursor"):
        try:
            cursor = Cursor.decode(request.args["cursor"])
        except CursorError as exc:
            abort(400, str(exc))
    session = db_session()
    f = form.to_filter()
    page = list_transactions(session, lab, f, cursor)
    # The totals read the whole filtered set: once, on its first page, not on every page.
    totals = currency_totals(session, lab, f) if cursor is None else None
    return render_template("transactions/index.html", form=form, lab=lab, page=page,
                           totals=totals, args=form.query_args())


@bp.get("/transactions.csv")
@login_required
def export():
    lab = current_lab()
    form = _filter_form(lab)
    if not form.validate():
        return render_template("transactions/index.html", form=form, lab=lab, page=None,
                               totals=[], args={}), 422
    session = db_session()
    audit(session, lab_id=lab.id, user_id=current_user.id, action="transactions.export",
          object_type="payment", ip=client_ip(), filters=form.query_args())
    session.commit()
    name = f"transactions-{lab.slug}-{utcnow().strftime('%Y%m%d-%H%M%S')}.csv"
    return Response(stream_with_context(export_csv(session, lab, form.to_filter())),
                    content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/transactions/<int:payment_id>")
@login_required
def detail(payment_id: int):
    session = db_session()
    payment = get_transaction(session, current_user.lab_id, payment_id) or abort(404)
    return render_template("transactions/detail.html", payment=payment,
                           link=payment.online_payment, customer=payment.online_payment.customer,
                           lab=current_lab(), exchanges=payment_timeline(session, payment))
