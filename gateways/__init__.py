"""Payment gateways behind one interface. Imports nothing from the portal or Flask."""

from .base import Gateway
from .paytabs import PayTabsGateway
from .pesopay import PesoPayGateway
from .phonepe import PhonePeGateway
from .phonepe_v1 import PhonePeV1Gateway
from .razorpay import RazorpayGateway
from .sandbox import SandboxGateway
from .square import SquareGateway
from .stripe import StripeGateway

GATEWAYS: dict[str, type[Gateway]] = {cls.name: cls for cls in (
    SandboxGateway, StripeGateway, RazorpayGateway, PhonePeGateway, PhonePeV1Gateway,
    PayTabsGateway, SquareGateway, PesoPayGateway)}


def gateway_class(name: str) -> type[Gateway] | None:
    return GATEWAYS.get(name)


__all__ = ["GATEWAYS", "Gateway", "gateway_class"]
