"""Properties of the code itself: who may move states, and that every job kind has a handler."""

from __future__ import annotations

import ast
from pathlib import Path

from portal.worker.jobs import HANDLERS, PERIODIC

PORTAL = Path(__file__).resolve().parents[2] / "portal"
MOVES = {"move_link", "move_payment", "move_refund"}


def calls_in(path: Path) -> list[tuple[str, ast.Call]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.func.id if isinstance(node.func, ast.Name) else
             node.func.attr if isinstance(node.func, ast.Attribute) else "", node)
            for node in ast.walk(tree) if isinstance(node, ast.Call)]


def test_only_the_event_service_moves_states():
    """Link, payment and refund states move in services/events.py, under its row locks."""
    movers = {str(path.relative_to(PORTAL)) for path in PORTAL.rglob("*.py")
              for name, _call in calls_in(path) if name in MOVES}
    assert movers == {"services/events.py"}


def test_every_job_kind_enqueued_has_a_handler():
    enqueued = set()
    for path in PORTAL.rglob("*.py"):
        for name, call in calls_in(path):
            if name == "enqueue" and len(call.args) >= 2 \
                    and isinstance(call.args[1], ast.Constant):
                enqueued.add(call.args[1].value)
    assert enqueued and enqueued <= set(HANDLERS), enqueued - set(HANDLERS)
    assert set(PERIODIC) <= set(HANDLERS)
