"""Where an output may go: the checks every writing command makes before it writes anything.

    DIR = outputs.check_output(DIR, catalog=CATALOG, catalog_audio=audio_uris(CATALOG), entries=ENTRIES)

No root, no home directory, nothing holding the command's inputs (the catalog, its audio),
nothing tagscale did not write or cannot write. tagscale deletes only directories that carry
its marker file (:data:`MARKER`). How a checked output is then written and published is
:mod:`pipelines.storage.publish`; local or gs:// is decided once, by :mod:`pipelines.storage.places`.
"""

from __future__ import annotations

import os

from pipelines.storage import fileio
from pipelines.storage.ownership import MARKER, OutputError, is_dir, owned, path_exists
from pipelines.storage.places import place_of

# What every writing command's --output help says of the rules check_output enforces.
RULES = "new, empty or made by tagscale; not a root, your home directory or a folder holding its inputs"
AUDIO_CHECK_ROWS = 1000  # catalog rows whose audio location is checked against --output on the driver


# ---------------------------------------------------------------------- checks before a run


def normalize(output: str) -> str:
    """The one spelling of an output location every check and writer uses.

    ``file:///abs`` becomes ``/abs``; trailing slashes go, except that a root stays a root
    (``/`` and ``file:///`` are ``/``, so the root check sees them); ``gs://bucket/dir/`` becomes
    ``gs://bucket/dir``. An empty location or a ``file://`` URL without an absolute path is
    refused, as it names no place a user can see.
    """
    if output.startswith("file://"):
        path = output[len("file://") :]
        if not path.startswith("/"):
            raise OutputError(f"--output {output}: a file:// URL needs an absolute path (file:///dir)")
        output = path
    if not output.strip():
        raise OutputError("--output is empty; choose a directory for tagscale's output")
    scheme, _, rest = output.partition("://")
    return f"{scheme}://{rest.strip('/')}" if place_of(output).remote else output.rstrip("/") or "/"


def within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or lies inside it (local paths resolved, links followed)."""
    place = place_of(path)
    if place is not place_of(directory):
        return False
    path, directory = place.real(path), place.real(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _foreign_names(directory: str, flag: str) -> list[str]:
    """Names in ``directory`` tagscale did not put there (not its dot files, not a folder with its
    marker); none when ``directory`` itself carries the marker."""
    if not path_exists(directory) or owned(directory):
        return []
    place = place_of(directory)
    if not place.remote and not place.is_dir(directory):
        raise OutputError(f"{flag} {directory} is a file; choose a directory for tagscale's output")
    names = place.names(directory)
    mine = [name for name in names if is_dir(fileio.join(directory, name)) and owned(fileio.join(directory, name))]
    return sorted(name for name in names - set(mine) if not name.startswith(".tagscale"))


def check_output(
    output: str,
    *,
    catalog: str | None = None,
    catalog_audio=(),
    entries: tuple[str, ...],
    inputs: tuple[str, ...] = (),
    flag: str = "--output",
) -> str:
    """Refuse an output folder that tagscale must not write into or delete from.

    Every command that writes a folder calls this before it writes anything. Refused: an
    empty location; a filesystem or bucket root; the home directory; a folder that is or
    contains the catalog, the audio of its first :data:`AUDIO_CHECK_ROWS` rows (``catalog_audio``,
    ``(row number, uri)`` pairs read lazily: a streamed peek, not a catalog read) or another
    input of the command (``inputs``); an existing folder
    holding files tagscale did not write (it carries no marker and holds more than tagscale's
    own dot files); an output entry that a publish would replace but tagscale did not make;
    a folder this process cannot write. Messages name the folder as ``flag``.

    Returns
    -------
    str
        ``output`` as :func:`normalize` spells it, the path the command should write to.
    """
    output = normalize(output)
    place = place_of(output)
    if place.is_root(output):
        raise OutputError(f"{flag} {output} is a filesystem root; choose a directory for tagscale's output")
    if not place.remote and place.real(output) == place.real(os.path.expanduser("~")):
        raise OutputError(f"{flag} {output} is your home directory; choose a directory for tagscale's output")
    if catalog is not None:
        _check_catalog(output, catalog, catalog_audio)
    for source in inputs:
        if within(source, output):
            raise OutputError(f"{flag} {output} is or contains the input {source}; choose another directory")
    for entry in entries:
        path = fileio.join(output, entry)
        if path_exists(path) and is_dir(path) and not owned(path):
            raise OutputError(f"{path} exists and was not made by tagscale (no {MARKER}); refusing to replace it")
    foreign = _foreign_names(output, flag)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(
            f"{flag} {output} holds files tagscale did not write ({shown}); choose a new or empty directory"
        )
    place.check_writable(output, OutputError)
    return output


def _check_catalog(output: str, catalog: str, catalog_audio) -> None:
    if within(catalog, output):
        raise OutputError(f"--output {output} contains the catalog {catalog}; choose another directory")
    for number, uri in catalog_audio:
        if number > AUDIO_CHECK_ROWS:
            break
        if uri and within(uri, output):
            raise OutputError(
                f"--output {output} contains the catalog's audio ({uri}, row {number}); choose another directory"
            )


def check_output_file(path: str, *, replaceable, what: str) -> str:
    """Refuse a single output file tagscale must not write: an empty location, a folder, a file
    directly in a filesystem root, an existing file that ``replaceable(path)`` does not take for
    a ``what`` (e.g. "thresholds file": an earlier output of the command), a file this process
    cannot write. Returns the normalized path."""
    path = normalize(path)
    place = place_of(path)
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    if not place.remote and place.is_root(parent or "/"):
        raise OutputError(f"--output {path} is in a filesystem root; choose a file in a directory")
    if path_exists(path) and is_dir(path):
        raise OutputError(f"--output {path} is a directory; give the {what} to write")
    if path_exists(path) and not replaceable(path):
        raise OutputError(f"--output {path} exists and is not a {what}; refusing to replace it")
    place.check_writable(path, OutputError)
    return path
