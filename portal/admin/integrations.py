"""/admin/integrations: the lab's webhook endpoints, their secrets (shown once) and delivery log."""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectMultipleField, StringField, URLField, widgets
from wtforms.validators import DataRequired, Length, Optional

from ..edge import MAX_ROW_ID
from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..i18n import staff_lazy_gettext as _l
from ..services import outhooks
from ..services.audit import audit
from ..tenancy import admin_required, client_ip, current_lab
from . import bp


class EndpointForm(FlaskForm):
    url = URLField(_l("Endpoint URL"), validators=[
        DataRequired(message=_l("Enter the URL of your system's webhook endpoint.")),
        Length(max=outhooks.MAX_URL_LENGTH)],
        description=_l("Where the portal POSTs signed events, for example "
                       "https://lis.example.com/hooks/payments."))
    description = StringField(_l("Description (optional)"),
                              validators=[Optional(), Length(max=200)])
    events = SelectMultipleField(
        _l("Events"), choices={t: t for t in outhooks.EVENT_TYPES},
        default=list(outhooks.EVENT_TYPES),
        validators=[DataRequired(message=_l("Choose at least one event."))],
        widget=widgets.ListWidget(prefix_label=False), option_widget=widgets.CheckboxInput())


class ActionForm(FlaskForm):
    """CSRF only: enable, disable, rotate, delete, redeliver."""


def _endpoint(endpoint_id: int):
    endpoint = outhooks.get_endpoint(db_session(), current_lab().id, endpoint_id) \
        if endpoint_id <= MAX_ROW_ID else None
    return endpoint or abort(404)


def _render_index(form: EndpointForm, created: outhooks.NewEndpoint | None = None,
                  status: int = 200):
    lab = current_lab()
    return render_template("admin/integrations.html", lab=lab, form=form, created=created,
                           endpoints=outhooks.list_endpoints(db_session(), lab.id),
                           test_mode=outhooks.in_test_mode(current_app.config, lab)), status


@bp.get("/admin/integrations")
@admin_required
def integrations():
    return _render_index(EndpointForm(formdata=None))


@bp.post("/admin/integrations")
@admin_required
def integrations_create():
    form = EndpointForm()
    if not form.validate_on_submit():
        return _render_index(form, status=422)
    session = db_session()
    lab = current_lab()
    try:
        created = outhooks.create_endpoint(session, current_app.config, lab, form.url.data,
                                           form.events.data, description=form.description.data,
                                           user_id=current_user.id)
    except outhooks.EndpointError as exc:
        session.rollback()
        getattr(form, exc.field, form.url).errors.append(exc.message)
        return _render_index(form, status=422)
    audit(session, lab_id=lab.id, user_id=current_user.id, action="webhook_endpoint.create",
          object_type="webhook_endpoint", object_id=created.endpoint.id, ip=client_ip(),
          url=created.endpoint.url, events=created.endpoint.event_types)
    session.commit()
    # Rendered, not redirected: the secret must not travel in the session cookie.
    return _render_index(EndpointForm(formdata=None), created, status=201)


def _render_detail(endpoint, new_secret: str | None = None, status: int = 200):
    session = db_session()
    before = request.args.get("before", type=int)
    rows = outhooks.deliveries(session, endpoint,
                               before_id=before if before and before <= MAX_ROW_ID else None)
    return render_template("admin/integration.html", lab=current_lab(), endpoint=endpoint,
                           deliveries=rows, new_secret=new_secret, form=ActionForm(),
                           attempts=outhooks.attempts_of(session, [d.id for d in rows]),
                           more=rows[-1].id if len(rows) == 50 else None), status


@bp.get("/admin/integrations/<int:endpoint_id>")
@admin_required
def integration(endpoint_id: int):
    return _render_detail(_endpoint(endpoint_id))


def _checked_action(endpoint_id: int):
    endpoint = _endpoint(endpoint_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    return endpoint


@bp.post("/admin/integrations/<int:endpoint_id>/enable")
@admin_required
def integration_enable(endpoint_id: int):
    endpoint = _checked_action(endpoint_id)
    endpoint.enabled = not endpoint.enabled
    session = db_session()
    audit(session, lab_id=endpoint.lab_id, user_id=current_user.id,
          action="webhook_endpoint.enable" if endpoint.enabled else "webhook_endpoint.disable",
          object_type="webhook_endpoint", object_id=endpoint.id, ip=client_ip())
    session.commit()
    flash(_s("Endpoint enabled: new events are sent to it.") if endpoint.enabled else
          _s("Endpoint disabled: nothing is sent to it until you enable it."), "success")
    return redirect(url_for("admin.integration", endpoint_id=endpoint.id), 303)


@bp.post("/admin/integrations/<int:endpoint_id>/rotate")
@admin_required
def integration_rotate(endpoint_id: int):
    endpoint = _checked_action(endpoint_id)
    session = db_session()
    secret = outhooks.rotate_secret(session, current_app.config, endpoint)
    audit(session, lab_id=endpoint.lab_id, user_id=current_user.id,
          action="webhook_endpoint.rotate_secret", object_type="webhook_endpoint",
          object_id=endpoint.id, ip=client_ip())
    session.commit()
    return _render_detail(endpoint, new_secret=secret)


@bp.post("/admin/integrations/<int:endpoint_id>/delete")
@admin_required
def integration_delete(endpoint_id: int):
    endpoint = _checked_action(endpoint_id)
    session = db_session()
    outhooks.delete_endpoint(session, endpoint)
    audit(session, lab_id=endpoint.lab_id, user_id=current_user.id,
          action="webhook_endpoint.delete", object_type="webhook_endpoint",
          object_id=endpoint.id, ip=client_ip(), url=endpoint.url)
    session.commit()
    flash(_s("Endpoint %(url)s deleted: nothing more is sent to it.", url=endpoint.url),
          "success")
    return redirect(url_for("admin.integrations"), 303)


@bp.post("/admin/integrations/<int:endpoint_id>/deliveries/<int:delivery_id>/redeliver")
@admin_required
def integration_redeliver(endpoint_id: int, delivery_id: int):
    endpoint = _checked_action(endpoint_id)
    session = db_session()
    delivery = outhooks.redeliver(session, endpoint.lab_id, delivery_id) \
        if delivery_id <= MAX_ROW_ID else None
    if delivery is None or delivery.endpoint_id != endpoint.id:
        session.rollback()
        abort(404)
    audit(session, lab_id=endpoint.lab_id, user_id=current_user.id,
          action="webhook_delivery.redeliver", object_type="webhook_delivery",
          object_id=delivery.id, ip=client_ip(), event=delivery.event.public_id)
    session.commit()
    flash(_s("Event %(event)s is queued to be sent again.", event=delivery.event.public_id),
          "success")
    return redirect(url_for("admin.integration", endpoint_id=endpoint.id), 303)
