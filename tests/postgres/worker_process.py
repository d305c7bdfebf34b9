"""`portal worker`, through its own entry point, with the tests' job kind added."""

import sys

from portal.cli import main
from portal.worker.jobs import HANDLERS
from tests.postgres.side_effects import KIND, side_effect

if __name__ == "__main__":
    HANDLERS[KIND] = side_effect
    sys.argv = ["portal", "worker"]
    main()
