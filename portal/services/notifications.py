"""The outbox: messages to patients are written in the caller's transaction, sent by the worker.

Each `Notification` row gets one `notification.send` job: the job runner gives the lease,
SKIP LOCKED claim, retries and backoff; the row mirrors attempts, status and the last error
for staff. Delivery is at least once: a worker killed between sending and committing sends
again, under the same Message-ID (email) or reference (SMS) so a provider may drop it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Flask, render_template
from markupsafe import Markup, escape
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import i18n, logmask, metrics
from ..models import (
    OPEN_LINK_STATES,
    Channel,
    Job,
    Lab,
    Notification,
    OnlinePayment,
    OutboxStatus,
    insert_unless_exists,
    utcnow,
)
from ..notify import DeliveryError, PermanentError
from ..notify.email import build_email, send_email
from ..notify.sms import Sms, backend_name, masked_phone, send_sms
from ..notify.whatsapp import TemplateMessage, send_whatsapp
from ..notify.whatsapp import configured as whatsapp_configured
from ..worker.queue import backoff, enqueue, new_job, queued_dedupes
from . import messages
from .audit import audit

log = logging.getLogger(__name__)

SEND_ATTEMPTS = 10  # backoff 5 s, 10 s, ... : about 40 minutes before a message is dead
REMINDER_MIN_LEAD = timedelta(hours=1)  # no reminder within the link's first hour
MAX_REMINDER_HOURS = 24 * 90
MAX_REMINDERS = 3


class NotificationError(Exception):
    """Cannot queue this message; the text is for staff."""


def contact(link: OnlinePayment, channel: Channel) -> str | None:
    """The phone or email entered for this link (kept on it), never a later patient's."""
    return link.patient_email if channel == Channel.EMAIL else link.patient_phone


def _reachable(link: OnlinePayment, kind: str,
               channels: Iterable[str]) -> Iterator[tuple[Channel, str]]:
    """(channel, recipient) for each of `channels` the patient can be reached on, once."""
    if kind not in messages.KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    for channel in dict.fromkeys(Channel(c) for c in channels):
        recipient = contact(link, channel)
        if recipient:
            yield channel, recipient


def _queued_row(link: OnlinePayment, kind: str, channel: Channel,
                recipient: str) -> dict[str, object]:
    return {"lab_id": link.lab_id, "online_payment_id": link.id, "channel": channel,
            "recipient": recipient, "template": kind, "status": OutboxStatus.QUEUED,
            "next_attempt_at": utcnow()}


def queue_message(session: Session, link: OnlinePayment, kind: str,
                  channels: Iterable[str]) -> list[Notification]:
    """One outbox row and its send job per channel the patient can be reached on."""
    queued = []
    for channel, recipient in _reachable(link, kind, channels):
        row = Notification(**_queued_row(link, kind, channel, recipient))
        session.add(row)
        session.flush()
        enqueue(session, "notification.send", {"notification_id": row.id}, lab_id=link.lab_id,
                max_attempts=SEND_ATTEMPTS)
        queued.append(row)
    return queued


def queue_once(session: Session, link: OnlinePayment, kind: str, channels: Iterable[str], *,
               dedupe: str) -> list[int]:
    """`queue_message`, once per `dedupe` key and channel (the unique dedupe_key: one INSERT
    that does nothing when the row exists); returns the new rows' ids."""
    queued = []
    for channel, recipient in _reachable(link, kind, channels):
        insert = insert_unless_exists(session, Notification, "dedupe_key")
        with session.no_autoflush:  # the caller's changes go in one flush, at its commit
            row_id = session.execute(insert.values(
                **_queued_row(link, kind, channel, recipient), attempts=0,
                dedupe_key=f"{dedupe}:{channel.value}")
                .returning(Notification.id)).scalar()
        if row_id is not None:
            session.add(new_job("notification.send", {"notification_id": row_id},
                                lab_id=link.lab_id, max_attempts=SEND_ATTEMPTS))
            queued.append(row_id)
    return queued


def queue_link_message(session: Session, link: OnlinePayment,
                       channels: Iterable[str]) -> list[Notification]:
    return queue_link_messages(session, [(link, channels)])


def queue_link_messages(session: Session, sends: Sequence[tuple[OnlinePayment, Iterable[str]]]
                        ) -> list[Notification]:
    """`queue_message(link, "link", channels)` for many new links: rows and jobs added
    together (one flush for all the rows' ids, batched INSERTs)."""
    rows = []
    for link, channels in sends:
        for channel in dict.fromkeys(Channel(c) for c in channels):
            recipient = contact(link, channel)
            if recipient:
                rows.append(Notification(
                    lab_id=link.lab_id, online_payment_id=link.id, channel=channel,
                    recipient=recipient, template="link", status=OutboxStatus.QUEUED,
                    next_attempt_at=utcnow()))
    if rows:
        session.add_all(rows)
        session.flush()
        session.add_all([new_job("notification.send", {"notification_id": row.id},
                                 lab_id=row.lab_id, max_attempts=SEND_ATTEMPTS)
                         for row in rows])
    return rows


def resend_link(session: Session, link: OnlinePayment, channel: str, *, user_id: int | None,
                ip: str | None = None) -> Notification:
    """Staff's Resend: refused for a closed link, a missing contact, or one already waiting."""
    channel = Channel(channel)
    status = link.effective_status()
    if status not in OPEN_LINK_STATES:
        raise NotificationError(f"This link is {status.value.replace('_', ' ')}: "
                                "there is nothing to send.")
    if not contact(link, channel):
        raise NotificationError(f"The patient has no {_channel_word(channel)}.")
    if channel == Channel.WHATSAPP and not messages.whatsapp_ready(
            session.get_one(Lab, link.lab_id)):
        raise NotificationError("WhatsApp is not set up: an admin names the lab's approved "
                                "templates on the Messages page.")
    waiting = session.scalar(select(Notification.id).where(
        Notification.online_payment_id == link.id, Notification.channel == channel,
        Notification.template == "link",
        Notification.status.in_((OutboxStatus.QUEUED, OutboxStatus.RUNNING))))
    if waiting:
        raise NotificationError(f"A message by {_channel_word(channel, short=True)} is already "
                                "waiting to be sent.")
    [row] = queue_message(session, link, "link", [channel])
    audit(session, lab_id=link.lab_id, user_id=user_id, action="link.resend",
          object_type="online_payment", object_id=link.id, ip=ip, channel=channel.value)
    return row


def queue_receipt(session: Session, link: OnlinePayment) -> list[int]:
    """Called where a link turns paid, in that transaction; once per link and channel."""
    lab = session.get_one(Lab, link.lab_id)
    channels = messages.settings_of(lab).receipt_channels
    return queue_once(session, link, "receipt", channels, dedupe=f"receipt:{link.id}")


def schedule_reminders(session: Session, link: OnlinePayment, *,
                       now: datetime | None = None) -> list[Job]:
    """One job per `Lab.reminder_hours_before`, due that long before the link expires."""
    return schedule_reminders_for(session, session.get_one(Lab, link.lab_id), [link], now=now)


def schedule_reminders_for(session: Session, lab: Lab, links: Sequence[OnlinePayment], *,
                           now: datetime | None = None) -> list[Job]:
    """`schedule_reminders` for many links of `lab`: one look for jobs queued already."""
    now = now or utcnow()
    wanted = []
    for link in links:
        for hours in sorted(set(lab.reminder_hours_before or []), reverse=True):
            run_at = link.expires_at - timedelta(hours=hours)
            if run_at >= now + REMINDER_MIN_LEAD:
                wanted.append((link, hours, run_at, f"reminder:{link.id}:{hours}"))
    if not wanted:
        return []
    queued = queued_dedupes(session, "notification.reminder", [key for *_, key in wanted])
    jobs = []
    for link, hours, run_at, key in wanted:
        if key in queued:
            continue
        queued.add(key)
        jobs.append(new_job("notification.reminder", {"link_id": link.id, "hours": hours},
                            lab_id=link.lab_id, run_at=run_at, max_attempts=3, dedupe=key))
    session.add_all(jobs)
    return jobs


def link_notifications(session: Session, link: OnlinePayment) -> list[Notification]:
    return list(session.scalars(select(Notification).where(
        Notification.lab_id == link.lab_id, Notification.online_payment_id == link.id)
        .order_by(Notification.id.desc())))


def _channel_word(channel: Channel, short: bool = False) -> str:
    if channel == Channel.EMAIL:
        return "email" if short else "email address"
    if channel == Channel.WHATSAPP:
        return "WhatsApp" if short else "mobile number"
    return "SMS" if short else "mobile number"


# --- the worker's side -------------------------------------------------------------------------

def send_reminder(app: Flask, session: Session, job: Job) -> None:
    """Queues the reminder unless the link is settled, closed or expired, or it went already."""
    link = session.get(OnlinePayment, job.payload["link_id"])
    hours = job.payload["hours"]
    if link is None or link.effective_status() not in OPEN_LINK_STATES:
        return
    lab = session.get_one(Lab, link.lab_id)
    if hours not in (lab.reminder_hours_before or []):
        return  # the lab has changed its policy since
    channels = session.scalars(select(Notification.channel).where(
        Notification.online_payment_id == link.id, Notification.template == "link")
        .distinct())
    queue_once(session, link, "reminder", list(channels),
               dedupe=f"reminder:{link.id}:{hours}")


@dataclass
class Outgoing:
    """One claimed `notification.send` job with its row, link and lab, loaded for sending.

    Read in one query for a whole batch of jobs; sending needs no database (the objects are
    detached), and what a send leaves behind is written with the job's "done" (`record_sent`).
    """

    job: Job
    row: Notification
    link: OnlinePayment | None
    lab: Lab
    settings: messages.MessageSettings
    skip: str | None = None  # why it is not sent: the link closed before its message went


def prepare_sends(app: Flask, session: Session, jobs: Sequence[Job]) -> dict[int, Outgoing]:
    """Loads the rows of these send jobs with their links and labs (one query), and marks the
    ones to send running; by job id. The caller commits before sending: no transaction stays
    open across SMTP or HTTP. A job whose row is gone, sent or dead is left out: it is done,
    with nothing to do (a worker died before closing it)."""
    by_row = {job.payload["notification_id"]: job for job in jobs}
    if not by_row:
        return {}
    found = session.execute(
        select(Notification, OnlinePayment, Lab)
        .join(Lab, Lab.id == Notification.lab_id)
        .outerjoin(OnlinePayment, (OnlinePayment.id == Notification.online_payment_id)
                   & (OnlinePayment.lab_id == Notification.lab_id))
        .where(Notification.id.in_(list(by_row)))).all()
    settings: dict[int, messages.MessageSettings] = {}  # parsed once per lab and batch
    now = utcnow()
    prepared: dict[int, Outgoing] = {}
    running: dict[tuple[int, datetime | None], list[int]] = {}
    for row, link, lab in found:
        job = by_row[row.id]
        if row.status in (OutboxStatus.DONE, OutboxStatus.DEAD):
            continue
        if lab.id not in settings:
            settings[lab.id] = messages.settings_of(lab)
        item = Outgoing(job=job, row=row, link=link, lab=lab, settings=settings[lab.id])
        status = link.effective_status(now) if link is not None else None
        if status is not None and row.template != "receipt" and status not in OPEN_LINK_STATES:
            item.skip = f"Not sent: the link is {status.value.replace('_', ' ')}."
        else:
            running.setdefault((job.attempts, job.lease_until), []).append(row.id)
        prepared[job.id] = item
    for (attempts, lease_until), ids in running.items():  # one UPDATE for a batch, as a rule
        session.execute(update(Notification).where(Notification.id.in_(ids))
                        .values(status=OutboxStatus.RUNNING, attempts=attempts,
                                lease_until=lease_until)
                        .execution_options(synchronize_session=False))
    return prepared


def deliver(app: Flask, item: Outgoing) -> str | None:
    """Sends one prepared message (no database); returns a note for staff when it was only
    logged. Raises when it could not be sent (`record_failure` says what happens next)."""
    if item.skip is not None:
        return item.skip
    link, lab, row = item.link, item.lab, item.row
    if link is None:
        raise LookupError(f"notification {row.id} has no link of lab {row.lab_id}")
    message = messages.render_for(lab, link, row.template, app.config["PORTAL_BASE_URL"],
                                  item.settings)
    if row.channel == Channel.EMAIL:
        return _send_email(app, lab, link, row, message)
    if row.channel == Channel.WHATSAPP:
        return _send_whatsapp(app, lab, link, row, message, item.settings)
    return _send_sms(app, link, row, message, item.settings)


def record_sent(session: Session, sent: Sequence[tuple[Outgoing, str | None, datetime]]) -> None:
    """Rows done, in the transaction that marks their jobs done (`queue.complete_many`):
    (item, note for staff or None, when it went) each; one executemany per kind of row."""
    skipped, went = [], []
    for item, note, sent_at in sent:
        row = item.row
        if item.skip is not None:  # done, never sent: sent_at stays empty
            skipped.append({"id": row.id, "status": OutboxStatus.DONE, "last_error": item.skip})
            _count(row, "skipped")
        else:
            went.append({"id": row.id, "status": OutboxStatus.DONE,
                         "attempts": item.job.attempts, "lease_until": None, "last_error": note,
                         # logged only: staff must not read "sent"
                         "sent_at": None if note else sent_at})
            _count(row, "logged" if note else "sent")
    for values in (skipped, went):
        if values:
            session.execute(update(Notification), values)


def record_failure(app: Flask, session: Session, item: Outgoing, exc: Exception) -> bool:
    """A send that raised: the row waits for its retry, or is dead; commits. Returns True
    when the job is done all the same (a permanent error: trying again cannot help)."""
    row, job = item.row, item.job
    # A provider may echo a credential in its error, which staff read on the link page.
    logmask.remember(logmask.settings_secrets(app.config))
    error = logmask.SECRETS.mask(redact(_describe(exc), item.link.token if item.link else ""))
    error = error[:1000]
    permanent = isinstance(exc, PermanentError)
    values: dict[str, object] = {"attempts": job.attempts, "last_error": error,
                                 "lease_until": None}
    if permanent or job.attempts >= job.max_attempts:
        values["status"] = OutboxStatus.DEAD
        log.warning("notification %s is dead: %s", row.id, error)
        state = "dead"
    else:
        values["status"] = OutboxStatus.QUEUED
        values["next_attempt_at"] = utcnow() + backoff(job.attempts)
        state = "retrying"
    session.execute(update(Notification).where(Notification.id == row.id).values(**values)
                    .execution_options(synchronize_session=False))
    session.commit()
    _count(row, state)
    return permanent


def release_sends(session: Session, items: Iterable[Outgoing]) -> None:
    """Rows marked running whose jobs were released unstarted (a worker stopping) wait again."""
    for item in items:
        if item.skip is None:
            session.execute(update(Notification).where(
                Notification.id == item.row.id, Notification.status == OutboxStatus.RUNNING,
                Notification.attempts == item.job.attempts)
                .values(status=OutboxStatus.QUEUED, attempts=item.job.attempts - 1,
                        lease_until=None)
                .execution_options(synchronize_session=False))


def send_notification(app: Flask, session: Session, job: Job) -> None:
    """One job alone; the worker sends a batch of them through the same steps (runner.py)."""
    item = prepare_sends(app, session, [job]).get(job.id)
    if item is None:
        return  # sent already (a worker died before closing its job), or given up
    session.commit()  # no transaction stays open across SMTP or HTTP
    try:
        note = deliver(app, item)
    except Exception as exc:
        if record_failure(app, session, item, exc):
            return  # the job is done: trying again cannot help
        raise
    record_sent(session, [(item, note, utcnow())])


def _count(row: Notification, state: str) -> None:
    metrics.NOTIFICATIONS.labels(str(row.channel.value), state).inc()


def _send_sms(app: Flask, link: OnlinePayment, row: Notification, message: messages.Message,
              settings: messages.MessageSettings) -> str | None:
    """Sends; returns a note for staff when the message was only logged."""
    send_sms(app.config, Sms(
        to=row.recipient, text=message.sms, log_text=redact(message.sms, link.token),
        kind=row.template, reference=f"ntf_{row.id}", sender_id=settings.sms_sender_id,
        dlt_entity_id=settings.dlt_entity_id,
        dlt_template_id=settings.dlt_templates.get(row.template, "")))
    if backend_name(app.config) == "console":
        return "Logged only: no SMS provider is set up (PORTAL_SMS_BACKEND is console)."
    return None


def _send_whatsapp(app: Flask, lab: Lab, link: OnlinePayment, row: Notification,
                   message: messages.Message, settings: messages.MessageSettings) -> str | None:
    send_whatsapp(app.config, TemplateMessage(
        to=row.recipient, template=settings.whatsapp_templates.get(row.template, ""),
        language=settings.whatsapp_language_for(message.language,
                                                 i18n.normalize(lab.default_language)
                                                 or i18n.DEFAULT),
        parameters=message.whatsapp_parameters, log_text=redact(message.chat, link.token)))
    if not whatsapp_configured(app.config):
        return "Logged only: no WhatsApp Business account is set up (PORTAL_WHATSAPP_ACCESS_TOKEN)."
    return None


def _send_email(app: Flask, lab: Lab, link: OnlinePayment, row: Notification,
                message: messages.Message) -> str | None:
    smtp_url = app.config.get("PORTAL_SMTP_URL")
    if not smtp_url:
        log.info("Email (PORTAL_SMTP_URL not set, not sent) to %s: %s | %s",
                 masked_email(row.recipient), message.subject, redact(message.text, link.token))
        return "Logged only: no mail server is set up (PORTAL_SMTP_URL)."
    email = build_email(
        mail_from=app.config["PORTAL_MAIL_FROM"], sender_name=lab.name, to=row.recipient,
        to_name=link.patient_name or "", subject=message.subject,
        text=message.text, html=email_html(lab, message), message_id=f"notification-{row.id}")
    send_email(smtp_url, email)
    log.info("email %s sent to %s", row.id, masked_email(row.recipient))
    return None


def email_html(lab: Lab, message: messages.Message) -> str:
    """The plain text as paragraphs, its link made a link; the lab's text is escaped."""
    paragraphs = []
    for block in message.text.strip().split("\n\n"):
        html = escape(block)
        url = str(escape(message.link))
        linked = str(html).replace(url, f'<a href="{url}">{url}</a>')
        html = Markup(linked)  # nosec B704  # the text and our own link were escaped above
        paragraphs.append(Markup("<br>\n").join(html.split("\n")))
    with i18n.speaking(message.language):
        return render_template("notifications/email.html", lab=lab, message=message,
                               paragraphs=paragraphs)


def redact(text: str, token: str) -> str:
    """A link's token is a capability: logs and errors keep only its start."""
    return text.replace(token, token[:6] + "…") if token else text


def masked_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def masked(row: Notification) -> str:
    return masked_email(row.recipient) if row.channel == Channel.EMAIL else \
        masked_phone(row.recipient)


def _describe(exc: Exception) -> str:
    if isinstance(exc, DeliveryError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"

