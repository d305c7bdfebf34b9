"""Production hashes passwords with argon2-cffi's RFC 9106 low-memory profile (Argon2id).

The rest of the suite runs with PORTAL_ARGON2_PROFILE=cheap-for-tests (set in tests/__init__.py).
"""

import pytest
from argon2 import extract_parameters, profiles

from portal.services.auth import hasher, password_hasher


def test_production_hashes_with_the_rfc_9106_low_memory_profile():
    production = password_hasher({})  # no PORTAL_ARGON2_PROFILE, as in production
    digest = production.hash("a long enough password")
    assert digest.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert extract_parameters(digest) == profiles.RFC_9106_LOW_MEMORY


def test_the_suite_hashes_cheaply_with_the_same_salt_and_hash_lengths():
    production = password_hasher({})
    assert (hasher.salt_len, hasher.hash_len, hasher.type) == (
        production.salt_len, production.hash_len, production.type)
    assert hasher.time_cost == 1 and hasher.memory_cost < production.memory_cost


def test_an_unknown_profile_is_refused():
    with pytest.raises(RuntimeError, match="PORTAL_ARGON2_PROFILE"):
        password_hasher({"PORTAL_ARGON2_PROFILE": "fast"})
