"""One SMTP connection carries many jobs' emails, against a real (local) SMTP server."""

from __future__ import annotations

import socket
import threading

import pytest

from portal.notify import DeliveryError
from portal.notify import email as mail
from tests.fakes.smtp import SmtpServer


def message(n: int):
    return mail.build_email(mail_from="payments@acme.test", sender_name="Acme", to=f"p{n}@x.test",
                            to_name="", subject=f"Bill {n}", text="Pay", html="<p>Pay</p>",
                            message_id=f"m{n}")


@pytest.fixture(autouse=True)
def fresh_thread_connection():
    mail.close_connections()
    yield
    mail.close_connections()


def test_emails_in_a_row_share_one_connection():
    with SmtpServer() as smtp:
        url = f"smtp://127.0.0.1:{smtp.port}"
        for n in range(5):
            mail.send_email(url, message(n))
        assert len(smtp.received) == 5
        assert len({r.peer for r in smtp.received}) == 1


def test_each_thread_has_its_own_connection():
    with SmtpServer() as smtp:
        url = f"smtp://127.0.0.1:{smtp.port}"

        def send(base: int):
            for n in range(3):
                mail.send_email(url, message(base + n))
            mail.close_connections()

        threads = [threading.Thread(target=send, args=(b,)) for b in (0, 10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(smtp.received) == 6
        assert len({r.peer for r in smtp.received}) == 2


def test_a_connection_the_server_dropped_is_replaced_and_the_email_sent():
    with SmtpServer() as smtp:
        url = f"smtp://127.0.0.1:{smtp.port}"
        mail.send_email(url, message(1))
        mail._open.connection.smtp.sock.shutdown(socket.SHUT_RDWR)  # as a server ending it
        mail.send_email(url, message(2))
        assert [r.message["Subject"] for r in smtp.received] == ["Bill 1", "Bill 2"]
        assert len({r.peer for r in smtp.received}) == 2


def test_an_idle_or_worn_connection_is_not_reused(monkeypatch):
    with SmtpServer() as smtp:
        url = f"smtp://127.0.0.1:{smtp.port}"
        monkeypatch.setattr(mail, "REUSE_MAX_MESSAGES", 2)
        for n in range(4):
            mail.send_email(url, message(n))
        assert len({r.peer for r in smtp.received}) == 2
        monkeypatch.setattr(mail, "REUSE_IDLE_SECONDS", -1.0)
        mail.send_email(url, message(9))
        assert len({r.peer for r in smtp.received}) == 3


def test_a_server_that_went_away_is_a_delivery_error():
    with SmtpServer() as smtp:
        url = f"smtp://127.0.0.1:{smtp.port}"
        mail.send_email(url, message(1))
    with pytest.raises(DeliveryError):
        mail.send_email(url, message(2))
    assert mail._open.connection is None
