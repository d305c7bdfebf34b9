"""The test suite. Imported before any test module, so before `portal` itself."""

import os

# Argon2 at production cost takes ~0.3 s a hash on a shared 2-core machine and almost every test
# signs someone in. Only tests/unit/test_password_hashing.py pins what production uses.
os.environ.setdefault("PORTAL_ARGON2_PROFILE", "cheap-for-tests")
