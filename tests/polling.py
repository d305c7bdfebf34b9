"""Waiting in tests for something another thread or process does."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 8.0, what: str = "the condition",
               log: Path | None = None) -> T:
    """check()'s first true result, asked every 50 ms; the test fails after `timeout` seconds
    (with `log`'s text, when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}" + (f"\n{log.read_text()}" if log else ""))
