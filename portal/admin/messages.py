"""/admin/messages: the lab's message texts with a preview, reminders, receipts, SMS settings."""

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import i18n
from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..notify import whatsapp
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
    # The texts of one language at a time; the other languages' texts are kept as they are.
    language = (i18n.normalize(request.args.get("language"))
                or i18n.normalize(lab.default_language) or i18n.DEFAULT)
    saved = messages.settings_of(lab)
    form = MessagesForm(formdata=request.form if request.method == "POST" else None)
    if request.method == "GET":
        form.load(lab, saved, language)
    shown, draft, status = saved, False, 200
    if form.validate_on_submit():
        if request.form.get("action") == "preview":
            shown, draft = form.to_settings(saved, language), True
        else:
            messages.save_settings(lab, form.to_settings(saved, language), form.hours)
            audit(session, lab_id=lab.id, user_id=current_user.id, action="messages.update",
                  object_type="lab", object_id=lab.id, ip=client_ip(),
                  reminder_hours=form.hours, language=language)
            session.commit()
            flash(_s("Message settings saved."), "success")
            shown_first = language == (i18n.normalize(lab.default_language) or i18n.DEFAULT)
            return redirect(url_for("admin.messages_settings",
                                    language=None if shown_first else language), 303)
    elif request.method == "POST":
        status = 422
    previews = messages.previews(lab, shown, current_app.config["PORTAL_BASE_URL"],
                                 language=language)
    return render_template("admin/messages.html", lab=lab, form=form, previews=previews,
                           draft=draft, kinds=messages.KINDS, labels=messages.KIND_LABELS,
                           sms_backend=current_app.config.get("PORTAL_SMS_BACKEND"),
                           whatsapp_configured=whatsapp.configured(current_app.config),
                           placeholders=messages.PLACEHOLDERS,
                           language=language, languages=i18n.ENGLISH_NAMES,
                           text_attrs={"lang": language, "dir": "auto"}), status
