"""A user's package with lorasweep tasks (a test fixture)."""
