"""`portal worker`, through its own entry point, with the tests' job kind registered."""

import sys

import tests.postgres.side_effects  # noqa: F401  registers the job kind
from portal.cli import main

if __name__ == "__main__":
    sys.argv = ["portal", "worker"]
    main()
