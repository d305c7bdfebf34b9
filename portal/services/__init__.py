"""Domain services: they take a database session explicitly and never read `request`."""
