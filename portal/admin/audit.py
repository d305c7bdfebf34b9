"""/admin/audit: the lab's audit log, newest first, filtered by action."""

from flask import abort, render_template, request, url_for
from werkzeug.routing import BuildError

from ..edge import row_id
from ..extensions import db_session
from ..services import audit_log
from ..tenancy import admin_required, current_lab
from . import bp

# object_type -> (endpoint, its id argument): where an entry's object can be opened.
OBJECT_PAGES = {
    "online_payment": ("links.detail", "link_id"),
    "payment": ("transactions.detail", "payment_id"),
    "customer": ("customers.detail", "customer_id"),
    "gateway": ("admin.gateway", "name"),
    "lab": ("admin.lab_settings_page", None),  # always the signed-in admin's own lab
}
OBJECT_LABELS = {"online_payment": "Link", "payment": "Payment", "customer": "Customer",
                 "gateway": "Gateway", "lab": "Lab", "user": "User", "api_key": "API key",
                 "refund": "Refund"}


def object_url(log) -> str | None:
    page = OBJECT_PAGES.get(log.object_type)
    if page is None or log.object_id is None:
        return None
    endpoint, argument = page
    if argument is None:
        return url_for(endpoint)
    value = log.object_id if argument == "name" else _int(log.object_id)
    if value is None:
        return None
    try:
        return url_for(endpoint, **{argument: value})
    except BuildError:  # a page this portal does not have (yet)
        return None


def object_label(log) -> str:
    kind = OBJECT_LABELS.get(log.object_type, log.object_type.replace("_", " ").capitalize())
    return f"{kind} {log.object_id}" if log.object_id is not None else kind


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() else None


@bp.get("/admin/audit")
@admin_required
def audit_page():
    session = db_session()
    lab = current_lab()
    action = request.args.get("action") or None
    if action is not None and not audit_log.valid_action_filter(action):
        abort(400, "Unknown action filter.")
    before = request.args.get("before", type=row_id)
    entries, next_cursor = audit_log.list_entries(session, lab.id, action=action,
                                                  before_id=before)
    return render_template("admin/audit.html", lab=lab, entries=entries, action=action,
                           before=before, next_cursor=next_cursor,
                           choices=audit_log.filter_choices(session, lab.id),
                           action_label=audit_log.action_label, describe=audit_log.describe,
                           object_url=object_url, object_label=object_label)
