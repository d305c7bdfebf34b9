"""/admin/messages: the lab's message texts with a preview, reminders, receipts, SMS settings."""

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..extensions import db_session
from ..services import messages
from ..services.audit import audit
from ..tenancy import admin_required, client_ip, current_lab
from . import bp
from .message_forms import MessagesForm


@bp.route("/admin/messages", methods=["GET", "POST"])
@admin_required
def messages_settings():
    session = db_session()
    lab = current_lab()
    saved = messages.settings_of(lab)
    form = MessagesForm(formdata=request.form if request.method == "POST" else None)
    if request.method == "GET":
        form.load(lab, saved)
    shown, draft, status = saved, False, 200
    if form.validate_on_submit():
        if request.form.get("action") == "preview":
            shown, draft = form.to_settings(), True
        else:
            messages.save_settings(lab, form.to_settings(), form.hours)
            audit(session, lab_id=lab.id, user_id=current_user.id, action="messages.update",
                  object_type="lab", object_id=lab.id, ip=client_ip(),
                  reminder_hours=form.hours)
            session.commit()
            flash("Message settings saved.", "success")
            return redirect(url_for("admin.messages_settings"), 303)
    elif request.method == "POST":
        status = 422
    previews = messages.previews(lab, shown, current_app.config["PORTAL_BASE_URL"])
    return render_template("admin/messages.html", lab=lab, form=form, previews=previews,
                           draft=draft, kinds=messages.KINDS, labels=messages.KIND_LABELS,
                           sms_backend=current_app.config.get("PORTAL_SMS_BACKEND")), status
