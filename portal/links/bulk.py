"""/links/bulk: upload a file of bills, see every row's problems, then create all the links."""

from __future__ import annotations

from datetime import datetime

from flask import Response, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from ..edge import LARGER_BODIES
from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..models import utcnow
from ..services import bulk
from ..services.keys import is_configured
from ..services.links import LinkError
from ..tenancy import client_ip, current_lab
from . import bp
from .bulk_forms import BulkCreateForm, BulkUploadForm

# The file itself may be 5 MB; what is past it gets the form's own message, up to this.
LARGER_BODIES["links.bulk_upload"] = bulk.MAX_FILE_BYTES + 3 * 1024 * 1024
PROBLEMS_SHOWN = 300
PREVIEW_ROWS = 20


def _upload(upload_id: str):
    return bulk.get_upload(db_session(), current_user.lab_id, current_user.id,
                           upload_id) or abort(404)


@bp.route("/links/bulk", methods=["GET", "POST"])
@login_required
def bulk_upload():
    lab = current_lab()
    form = BulkUploadForm()
    if form.validate_on_submit():
        upload = form.file.data
        data = upload.read(bulk.MAX_FILE_BYTES + 1)
        session = db_session()
        try:
            table = bulk.read_table(upload.filename or "", data)
        except bulk.BulkFileError as exc:
            form.file.errors.append(str(exc))
        else:
            rows = bulk.check_table(session, lab, table)
            saved = bulk.save_upload(session, lab, current_user.id, upload.filename or "",
                                     rows)
            session.commit()
            if table.ignored:
                flash(_s("Columns left out (not known): %(columns)s.",
                         columns=", ".join(table.ignored)), "info")
            return redirect(url_for("links.bulk_review", upload_id=saved.public_id), 303)
    return render_template("links/bulk.html", form=form, lab=lab, columns=bulk.COLUMNS,
                           max_rows=bulk.MAX_ROWS,
                           gateway_ready=is_configured(db_session(), lab.id,
                                                       lab.default_gateway)
                           ), 422 if form.errors else 200


@bp.get("/links/bulk/template.csv")
@login_required
def bulk_template():
    return Response(bulk.template_csv(), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": "attachment; filename=links-template.csv"})


@bp.get("/links/bulk/<upload_id>")
@login_required
def bulk_review(upload_id: str):
    return _review(_upload(upload_id), BulkCreateForm())


def _review(upload, form, status: int = 200):
    lab = current_lab()
    bad = [row for row in upload.rows if row["errors"]]
    good = [row for row in upload.rows if row["link"] is not None]
    preview = [{**row["link"], "n": row["n"],
                "expires": datetime.fromisoformat(row["link"]["expires_at"])}
               for row in good[:PREVIEW_ROWS]]
    problems = [(row["n"], column, message) for row in bad for column, message in row["errors"]]
    created = [r for r in (upload.results or []) if "link_id" in r]
    return render_template("links/bulk_review.html", upload=upload, form=form, lab=lab,
                           problems=problems[:PROBLEMS_SHOWN], more=len(problems) - PROBLEMS_SHOWN,
                           bad_rows=len(bad), good=preview, good_rows=len(good),
                           created=len(created), now=utcnow()), status


@bp.post("/links/bulk/<upload_id>/create")
@login_required
def bulk_create(upload_id: str):
    upload = _upload(upload_id)
    form = BulkCreateForm()
    if not form.validate_on_submit():
        return _review(upload, form, 422)
    session = db_session()
    try:
        count = bulk.create_from_upload(
            session, current_lab(), upload, drop_bad=form.drop_bad.data,
            default_send=bulk.SEND_ALL if form.send.data else (), user_id=current_user.id,
            ip=client_ip())
    except bulk.BulkStale:
        session.commit()  # the rows' new problems are kept; nothing was created
        form.drop_bad.errors.append(_s("Some rows are no longer valid since the check (see "
                                       "below). Nothing was created."))
        return _review(upload, form, 422)
    except LinkError as exc:
        session.rollback()
        form.drop_bad.errors.append(str(exc))
        return _review(upload, form, 422)
    session.commit()
    current_app.logger.info("user %s created %s links in bulk", current_user.id, count)
    flash(_s("%(count)s payment links created.", count=f"{count:,}"), "success")
    return redirect(url_for("links.bulk_review", upload_id=upload_id), 303)


@bp.get("/links/bulk/<upload_id>/problems.csv")
@login_required
def bulk_problems(upload_id: str):
    upload = _upload(upload_id)
    return Response(bulk.problems_csv(upload), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": "attachment; filename=problems.csv"})


@bp.get("/links/bulk/<upload_id>/result.csv")
@login_required
def bulk_result(upload_id: str):
    upload = _upload(upload_id)
    if upload.results is None:
        abort(404)
    body = bulk.result_csv(db_session(), current_lab(), upload,
                           current_app.config["PORTAL_BASE_URL"])
    name = f"links-{upload.created_at.strftime('%Y%m%d-%H%M%S')}.csv"
    return Response(body, content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f"attachment; filename={name}"})
