"""Input handling shared by the service (validation before create) and the worker: light, no torch."""
