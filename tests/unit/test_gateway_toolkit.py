"""The shared gateway toolkit: currency conversion, header and JSON helpers, and the layout every
gateway module keeps (so the next gateway is written the same way)."""

import ast
import importlib
import pkgutil
from decimal import Decimal
from pathlib import Path

import pytest

import gateways
from gateways import currency
from gateways.base import Gateway, MalformedPayload, header, json_object, load_json
from portal import money

ROOT = Path(gateways.__file__).parent
DOCS = ROOT.parent / "docs" / "gateways"
SECTIONS = ("# ---- constants", "# ---- wire format", "# ---- signatures")


@pytest.mark.parametrize("minor, code, text", [
    (123450, "INR", "1234.50"), (12345, "KWD", "12.345"), (1500, "JPY", "1500"),
    (5, "AED", "0.05"), (1000, "jod", "1.000"), (0, "USD", "0.00"), (7, "CLP", "7")])
def test_minor_and_major_units_round_trip(minor, code, text):
    assert currency.to_major(minor, code) == text
    assert currency.to_minor(text, code) == minor


def test_to_minor_takes_exact_numbers_only():
    assert currency.to_minor(" 12.3 ", "KWD") == 12300
    assert currency.to_minor("500.00", "JPY") == 500
    assert currency.to_minor(100, "AED") == 10000
    assert currency.to_minor(Decimal("1.5"), "USD") == 150
    for value, code in (("12.3456", "KWD"), ("12.5", "JPY"), ("0.001", "AED"), ("-1.00", "USD"),
                        ("1e3", "USD"), ("1_000", "USD"), ("NaN", "USD"), ("", "USD"),
                        (12.5, "USD"), (True, "USD"), (None, "USD"), (Decimal("-1"), "USD"),
                        (Decimal("Infinity"), "USD")):
        with pytest.raises(currency.AmountError):
            currency.to_minor(value, code)
    with pytest.raises(currency.CurrencyError):
        currency.to_minor("1.00", "US")


def test_the_portal_and_the_gateways_read_one_exponent_table():
    assert money.ISO_EXPONENTS is currency.ISO_EXPONENTS
    for code in (*money.COMMON_CURRENCIES, "ISK", "HUF", "TWD", "COP", "MGA", "XOF", "TND"):
        assert money.exponent(code) == currency.exponent(code), code
    with pytest.raises(money.MoneyError):
        money.exponent("U$D")


def test_gateway_currency_lists_have_iso_exponents():
    from gateways.paytabs import wire as paytabs
    from gateways.pesopay import wire as pesopay

    iso = {"JPY": 0, "KRW": 0, "VND": 0, "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "OMR": 3}
    for code in (*paytabs.CURRENCIES, *pesopay.CURRENCY_CODES):
        assert currency.exponent(code) == iso.get(code, 2), code


def test_header_ignores_case_and_json_helpers_refuse_what_is_not_json():
    assert header({"x-verify": "a"}, "X-VERIFY") == "a"
    assert header({"X-Verify": "b"}, "x-verify") == "b"
    assert header({}, "X-VERIFY") is None
    assert load_json(b'{"amount": 12.345}', "JSON", parse_float=str) == {"amount": "12.345"}
    assert json_object(b'{"a": 1}', "an event") == {"a": 1}
    for raw in (b"[1]", b"not json", b"\xff\xfe", b""):
        with pytest.raises(MalformedPayload, match="not an event"):
            json_object(raw, "an event")


def gateway_modules():
    """(name, the class's file, the wire format's file) of every gateway."""
    for info in pkgutil.iter_modules([str(ROOT)]):
        module = importlib.import_module(f"gateways.{info.name}")
        classes = [c for c in vars(module).values()
                   if isinstance(c, type) and issubclass(c, Gateway) and c is not Gateway
                   and c.__module__ == module.__name__]
        if classes:
            path = Path(module.__file__)
            yield classes[0].name, path, path.with_name("wire.py") if info.ispkg else path


def test_every_gateway_is_found():
    assert sorted(name for name, _, _ in gateway_modules()) == sorted(gateways.GATEWAYS)


@pytest.mark.parametrize("name, class_file, wire_file", list(gateway_modules()))
def test_gateway_modules_share_one_layout(name, class_file, wire_file):
    wire_text = wire_file.read_text()
    positions = [wire_text.find(section) for section in SECTIONS]
    assert -1 not in positions and positions == sorted(positions), f"{wire_file}: {SECTIONS}"
    for path in {class_file, wire_file}:
        assert len(path.read_text().splitlines()) <= 400, f"{path}: split it"
        tree = ast.parse(path.read_text())
        functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        # The toolkit has these once: lookup_status, header, json_object.
        assert not functions & {"lookup", "_header", "_load_json", "_load_event"}, path
        assert "../shared" not in path.read_text()
    gateway_class = gateways.GATEWAYS[name]
    assert "__init__" not in vars(gateway_class), "override configure() instead"
    assert f"docs/gateways/{name}.md" in (class_file.read_text() + wire_text)
    assert (DOCS / f"{name}.md").is_file()


def test_mask_secrets_masks_a_secret_that_contains_another_whole():
    from gateways.http import MASK, mask_secrets

    # "sk_live_abcd" lies inside the longer key: masking it first would leave "efgh9876" showing.
    masked = mask_secrets({"error": "bad key sk_live_abcdefgh9876"},
                          ["sk_live_abcd", "sk_live_abcdefgh9876"])
    assert masked == {"error": f"bad key {MASK}"}
