"""The sweep: recipe data -> a checked spec (spec.py), study naming, storage URLs, grid
enqueueing, the adaptive search, the preflight, the worker loop, status."""
