import pytest

from portal.models import (
    LINK_TRANSITIONS,
    PAYMENT_TRANSITIONS,
    InvalidTransition,
    LinkStatus,
    OnlinePayment,
    Payment,
    PaymentStatus,
    move_link,
    move_payment,
)

TERMINAL_LINK = {LinkStatus.PAID, LinkStatus.EXPIRED, LinkStatus.CANCELLED}


def test_every_state_has_a_row():
    assert set(LINK_TRANSITIONS) == set(LinkStatus)
    assert set(PAYMENT_TRANSITIONS) == set(PaymentStatus)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_LINK))
@pytest.mark.parametrize("target", sorted(LinkStatus))
def test_terminal_link_states_never_go_back(terminal, target):
    link = OnlinePayment(status=terminal)
    if target == terminal:
        assert move_link(link, target) is False
    else:
        with pytest.raises(InvalidTransition):
            move_link(link, target)
    assert link.status == terminal


@pytest.mark.parametrize("start,target", [
    (LinkStatus.CREATED, LinkStatus.PAID),
    (LinkStatus.CREATED, LinkStatus.PARTIALLY_PAID),
    (LinkStatus.CREATED, LinkStatus.EXPIRED),
    (LinkStatus.CREATED, LinkStatus.CANCELLED),
    (LinkStatus.PARTIALLY_PAID, LinkStatus.PAID),
    (LinkStatus.PARTIALLY_PAID, LinkStatus.CANCELLED),
])
def test_allowed_link_moves(start, target):
    link = OnlinePayment(status=start)
    assert move_link(link, target) is True
    assert link.status == target


def test_partially_paid_cannot_go_back_to_created():
    with pytest.raises(InvalidTransition):
        move_link(OnlinePayment(status=LinkStatus.PARTIALLY_PAID), LinkStatus.CREATED)


@pytest.mark.parametrize("start,target,allowed", [
    (PaymentStatus.PENDING, PaymentStatus.SUCCEEDED, True),
    (PaymentStatus.PENDING, PaymentStatus.FAILED, True),
    (PaymentStatus.FAILED, PaymentStatus.SUCCEEDED, True),
    (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, False),
    (PaymentStatus.SUCCEEDED, PaymentStatus.PENDING, False),
    (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED, True),
    (PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED, True),
    (PaymentStatus.REFUNDED, PaymentStatus.SUCCEEDED, False),
    (PaymentStatus.FAILED, PaymentStatus.PENDING, False),
])
def test_payment_moves(start, target, allowed):
    payment = Payment(status=start)
    if allowed:
        assert move_payment(payment, target) is True
        assert payment.status == target
    else:
        with pytest.raises(InvalidTransition):
            move_payment(payment, target)
        assert payment.status == start


def test_same_state_is_a_no_op():
    assert move_payment(Payment(status=PaymentStatus.SUCCEEDED), PaymentStatus.SUCCEEDED) is False
