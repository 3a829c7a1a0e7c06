"""Provenance of a tag run: which model (and on what terms), which catalog, which tagscale.

A run records it twice: in ``tags/manifest.json`` (key ``provenance``, :mod:`runfolder.manifest`) and in every tag
Parquet file's key-value metadata (key :data:`METADATA_KEY`, a JSON value), so a file copied
away from its run still says where its scores came from. Nothing in it changes from run to
run of the same catalog and model (no run id, no clock), so reruns keep writing the same bytes.
"""

from __future__ import annotations

import json
import os
import re

from runfolder import layout, manifest
from runtime.errors import TagscaleError

METADATA_KEY = "tagscale.provenance"
SETUP_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


def tagscale_version() -> str:
    """The installed tagscale's version, else the one setup.py declares (a source checkout)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("tagscale")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        with open(SETUP_PY) as handle:
            found = re.search(r"""version\s*=\s*["']([^"']+)["']""", handle.read())
    except OSError:
        found = None
    return found.group(1) if found else "unknown"


def model_terms(model_path: str, info: dict) -> dict:
    """The model's name, version, licence, source, SHA-256 and commercial use (True/False/None)."""
    from model import pretrained

    return pretrained.provenance(info, model_path)


def require_commercial(model_path: str, info: dict) -> None:
    """Refuse, before any work, a model whose licence is not known to allow commercial use.

    Raises
    ------
    TagscaleError
        Naming the model, its licence and whether its commercial use is disallowed or unknown.
    """
    terms = model_terms(model_path, info)
    if terms["commercial"] is not True:
        verdict = "does not allow" if terms["commercial"] is False else "is not known to allow"
        raise TagscaleError(
            f"--require-commercial: model {terms['name'] or model_path} (licence: {terms['license']}) "
            f"{verdict} commercial use"
        )


def run_provenance(catalog: str, model_path: str, info: dict, catalog_rows: int | None) -> dict:
    """The provenance of a run of ``model_path`` over ``catalog`` with ``catalog_rows`` rows."""
    path = catalog if "://" in catalog else os.path.abspath(catalog)
    return {
        "model": model_terms(model_path, info),
        "catalog": {"path": path, "rows": catalog_rows},
        "tagscale_version": tagscale_version(),
    }


def parquet_metadata(rows: int, base: dict) -> dict:
    """The Parquet key-value metadata every tag file of a run carries: ``base`` (a
    :func:`run_provenance`) with the catalog's row count ``rows``."""
    record = {**base, "catalog": {**base["catalog"], "rows": int(rows)}}
    return {METADATA_KEY: json.dumps(record, sort_keys=True)}


def read(tags_dir: str) -> dict | None:
    """A run's provenance as its manifest records it; None for a run written before runs
    recorded it (or whose manifest is not JSON: the reader says so).

    ``tags_dir`` is a ``tagscale tag --output`` directory or its ``tags/`` directory.
    """
    for directory in layout.tags_dirs(tags_dir):
        try:
            found = manifest.read(directory)
        except TagscaleError:
            return None
        if found is not None:
            recorded = found.get(layout.PROVENANCE_KEY) if isinstance(found, dict) else None
            return recorded if isinstance(recorded, dict) else None
    return None


def describe(record: dict) -> list[str]:
    """A few lines that say where a run's scores came from."""
    model, catalog = record.get("model", {}), record.get("catalog", {})
    commercial = {True: "yes", False: "no"}.get(model.get("commercial"), "unknown")
    lines = [
        f"model: {model.get('name')} version {model.get('version')}",
        f"licence: {model.get('license')} (commercial use: {commercial})",
        f"source: {model.get('source')}" + (f" (sha256 {model['sha256']})" if model.get("sha256") else ""),
        f"catalog: {catalog.get('path')} ({catalog.get('rows')} rows)",
        f"tagscale: {record.get('tagscale_version')}",
    ]
    return lines
