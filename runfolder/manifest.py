"""A run's ``tags/manifest.json``: the list of files readers read, written last by a run.

A tag run writes its Parquet into its staging directory as many files; the manifest it
publishes last lists exactly the files of the output (this run's, plus the earlier ones an
``--incremental`` run keeps), so a reader never sees a partial or stale file, locally or on
gs://. A run with ``--segments`` lists its segments table's files under ``segments``
(:mod:`runfolder.segments`); the run's provenance (:mod:`runfolder.provenance`) is there too.
The dead-letter folder has a manifest of the same form (``dead_letter/_manifest.json``).
"""

from __future__ import annotations

import json

from pipelines.storage import fileio, filesystem
from runfolder import layout
from runtime.errors import TagscaleError


def read_manifest(directory: str, name: str, key: str = "files") -> list[str] | None:
    """The file names ``directory/name`` lists (under ``key``); None when there is no such
    manifest, or when an optional ``key`` (any but ``files``) is not in it.

    Raises
    ------
    TagscaleError
        Naming the manifest, when it is not JSON of the form ``{"files": [names]}`` or an entry
        is not a plain Parquet file name of ``directory`` (:data:`runfolder.layout.SAFE_NAME`).
    """
    manifest = read(directory, name)
    if manifest is None:
        return None
    path = layout.join(directory, name)
    if key != "files" and isinstance(manifest, dict) and key not in manifest:
        return None
    files = manifest.get(key) if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        raise TagscaleError(f'{path} is not a tagscale manifest: expected {{"{key}": [file names]}}')
    for entry in files:
        if not isinstance(entry, str) or not layout.SAFE_NAME.fullmatch(entry):
            raise TagscaleError(
                f"{path} lists {ascii(entry)[:120]}, not a plain Parquet file name "
                f"of its folder ({layout.SAFE_NAME.pattern}); refusing to read it"
            )
    return list(files)


def read(directory: str, name: str = layout.MANIFEST):
    """The parsed manifest ``directory/name``; None when there is none.

    Raises
    ------
    TagscaleError
        Naming the manifest, when it is not JSON.
    """
    path = layout.join(directory, name)
    if not filesystem.is_file(path):
        return None
    try:
        return json.loads(filesystem.read_text(path))
    except (ValueError, UnicodeDecodeError) as error:
        raise TagscaleError(f"{path} is not a tagscale manifest: not JSON ({error})") from error


def write_manifest(directory: str, name: str, names: list[str], *, run_id: str, extra: dict | None = None) -> dict:
    """Write ``directory/name`` listing exactly ``names``: the files readers will read (and the
    keys of ``extra``, which readers of the file list ignore; a list there is more file names)."""
    listed = [entry for value in (extra or {}).values() if isinstance(value, list) for entry in value]
    for entry in [*names, *listed]:
        if not layout.SAFE_NAME.fullmatch(entry):
            raise ValueError(f"not a plain Parquet file name: {entry!r}")
    manifest = {**(extra or {}), "files": sorted(names), "run_id": run_id, "written_by": "tagscale"}
    fileio.write_text(fileio.join(directory, name), json.dumps(manifest, indent=1))
    return manifest


def manifest_files(tags_dir: str) -> list[str] | None:
    """The Parquet file names (relative to ``tags_dir``) its manifest lists; None without one.

    Raises
    ------
    runtime.errors.TagscaleError
        Naming the manifest, when it is malformed or lists anything but plain file names of
        ``tags_dir``.
    """
    return read_manifest(tags_dir, layout.MANIFEST)


def write_tags_manifest(
    tags_dir: str,
    names: list[str],
    *,
    run_id: str,
    provenance: dict | None = None,
    segment_names: list[str] | None = None,
) -> dict:
    """Write ``tags_dir/manifest.json`` listing exactly ``names``: the files readers will read,
    with the run's ``provenance`` when given, and its segment files under ``segments`` when the
    run has a segments table."""
    extra = {layout.PROVENANCE_KEY: provenance} if provenance is not None else {}
    if segment_names is not None:
        extra[layout.SEGMENTS_KEY] = sorted(segment_names)
    return write_manifest(tags_dir, layout.MANIFEST, names, run_id=run_id, extra=extra or None)


def tags_folder(run_dir: str) -> str | None:
    """The folder of a run's manifest (``run_dir/tags`` or ``run_dir`` itself); None without one."""
    for directory in layout.tags_dirs(run_dir):
        if manifest_files(directory) is not None:
            return directory
    return None


def segment_files(run_dir: str) -> list[str] | None:
    """Every segment Parquet file of a run (its manifest's ``segments``); None when the run has
    no segments table (tagged without ``--segments``, or written before manifests)."""
    directory = tags_folder(run_dir)
    if directory is None:
        return None
    names = read_manifest(directory, layout.MANIFEST, layout.SEGMENTS_KEY)
    return None if names is None else [layout.join(directory, name) for name in dict.fromkeys(names)]


def tag_files(run_dir: str) -> list[str]:
    """Every Parquet file of a run's track table, as its manifest lists them (a name listed
    twice once, in the order first listed).

    ``run_dir`` is a ``tagscale tag --output`` directory or its ``tags/`` directory. Output
    written before manifests existed (no manifest.json) is read by its ``*.parquet`` files,
    less those of a segments table (named ``segments-*``): segment rows are not tracks.
    """
    directory = tags_folder(run_dir)
    if directory is not None:
        return [layout.join(directory, name) for name in dict.fromkeys(manifest_files(directory))]
    for directory in layout.tags_dirs(run_dir):
        files = [
            path
            for path in filesystem.list_files(directory)
            if path.endswith(".parquet") and "/" not in path[len(directory.rstrip("/")) + 1 :]
        ]
        files = [path for path in files if not layout.is_segment_file(path)]
        if files:
            return files
    return []


def dead_letter_files(run_dir: str) -> list[str]:
    """Every dead-letter Parquet file of a run, as its manifest lists them (a run written before
    the manifest existed: its ``dead_letter/*.parquet``).

    Raises
    ------
    runtime.errors.TagscaleError
        Naming the manifest, when it is malformed or lists anything but plain file names.
    """
    folder = layout.join(run_dir.rstrip("/") or "/", layout.DEAD_LETTER)
    names = read_manifest(folder, layout.DEAD_LETTER_MANIFEST)
    if names is None:
        return [
            path
            for path in filesystem.list_files(folder)
            if path.endswith(".parquet") and "/" not in path[len(folder) + 1 :]
        ]
    return [layout.join(folder, name) for name in dict.fromkeys(names)]


def keep_segments(asked: bool, incremental: bool, kept: list[str], kept_segments: list[str] | None) -> bool:
    """Whether an incremental run writes segments, so that the two tables stay consistent.

    Over an output with a segments table, the run writes segments whether or not ``--segments``
    was given: dropping the table would lose the kept tracks' rows, and keeping it without new
    rows would leave the new tracks out. Over tracks tagged without segments, ``--segments``
    cannot add theirs (their track rows would be written twice): refused.

    Raises
    ------
    TagscaleError
        ``--segments --incremental`` over an output whose tracks were tagged without segments.
    """
    if not incremental or not kept:
        return asked
    if kept_segments is not None:
        return True
    if asked:
        raise TagscaleError(
            "--segments --incremental: the tracks already in this output were tagged without --segments, "
            "so they have no segment rows; run once without --incremental to tag every track with segments"
        )
    return False
