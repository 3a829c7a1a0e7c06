"""index: ``tagscale index --tags DIR`` (the code lives with the search it serves, :mod:`pipelines.similar`)."""

from __future__ import annotations

import sys

from pipelines.similar import index_main as main

__all__ = ["main"]

if __name__ == "__main__":
    from model.errors import run_command

    sys.exit(run_command("index", main))
