"""A plugin module that fails on import (a test fixture)."""

raise RuntimeError("reviews_broken needs a database that is not here")
