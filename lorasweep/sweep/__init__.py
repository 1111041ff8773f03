"""The sweep: study naming, storage URLs, grid enqueueing, the worker loop, status."""
