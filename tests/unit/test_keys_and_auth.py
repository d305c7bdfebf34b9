import pytest
from cryptography.fernet import Fernet

from portal.services.auth import hash_password, safe_next_url, verify_password
from portal.services.keys import CredentialsError, decrypt, encrypt, validate_credentials


def test_credentials_round_trip_and_are_not_clear_text():
    keys = [Fernet.generate_key().decode()]
    token = encrypt(keys, {"webhook_secret": "whsec_visible_if_broken"})
    assert b"whsec_visible_if_broken" not in token
    assert decrypt(keys, token) == {"webhook_secret": "whsec_visible_if_broken"}


def test_old_key_still_decrypts_after_a_new_one_is_added():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = encrypt([old], {"webhook_secret": "s3cret-value"})
    assert decrypt([new, old], token) == {"webhook_secret": "s3cret-value"}
    with pytest.raises(RuntimeError):
        decrypt([new], token)


def test_validate_refuses_unknown_and_missing_fields():
    with pytest.raises(CredentialsError, match="unknown field"):
        validate_credentials("sandbox", {"webhook_secret": "x", "api_key": "y"})
    with pytest.raises(CredentialsError, match="webhook_secret is required"):
        validate_credentials("sandbox", {})
    with pytest.raises(CredentialsError, match="unknown gateway"):
        validate_credentials("paypal", {})


def test_blank_secret_keeps_the_stored_one():
    assert validate_credentials("sandbox", {"webhook_secret": ""},
                                existing={"webhook_secret": "kept"}) == {"webhook_secret": "kept"}


def test_argon2id_hashes():
    digest = hash_password("a long enough password")
    assert digest.startswith("$argon2id$")
    assert verify_password(digest, "a long enough password")
    assert not verify_password(digest, "wrong password here")
    assert not verify_password("not-a-hash", "x")
    with pytest.raises(ValueError):
        hash_password("short")


@pytest.mark.parametrize("target,expected", [
    ("/links/3", "/links/3"),
    ("/links?status=paid", "/links?status=paid"),
    ("https://evil.example/", None),
    ("//evil.example/x", None),
    ("/\\evil.example", None),
    ("\\\\evil.example", None),
    ("javascript:alert(1)", None),
    ("http:/evil.example", None),
    ("/links\n/x", None),
    ("", None),
    (None, None),
])
def test_safe_next_url(target, expected):
    assert safe_next_url(target) == expected
