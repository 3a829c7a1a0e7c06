"""Errors a user can fix. The ``tagscale`` command prints their message as one line and exits 2."""


class TagscaleError(Exception):
    """Base class for user-facing errors (bad catalog, missing model, bad flags)."""
