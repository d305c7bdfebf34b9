"""Payment gateways behind one interface. Imports nothing from the portal or Flask."""

from .base import Gateway
from .sandbox import SandboxGateway

GATEWAYS: dict[str, type[Gateway]] = {cls.name: cls for cls in (SandboxGateway,)}


def gateway_class(name: str) -> type[Gateway] | None:
    return GATEWAYS.get(name)


__all__ = ["GATEWAYS", "Gateway", "gateway_class"]
