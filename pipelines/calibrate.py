"""calibrate: per-tag score thresholds (the THRESHOLDS JSON file) and their loader."""
from __future__ import annotations

import json

from model.errors import TagscaleError
from pipelines import fileio


def load_thresholds(path: str) -> dict[str, float]:
    """Tag -> threshold from a THRESHOLDS file (``{"tags": {TAG: {"threshold": ...}}}``).

    Raises
    ------
    TagscaleError
        When the file is missing or is not a thresholds file.
    """
    try:
        document = json.loads(fileio.read_text(path))
        return {str(tag): float(entry["threshold"]) for tag, entry in document["tags"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise TagscaleError(f"cannot read thresholds {path}: {error}") from error
