"""Local HTTP fakes of the gateways, each speaking its gateway's wire format and signing its way."""
