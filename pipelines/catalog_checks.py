"""What a run checks of its catalog before it starts: that gs:// can be reached for it, and the
catalog's audio uris, read lazily, for the output check (an output must not hold the audio)."""

from __future__ import annotations

import itertools

from pipelines.catalog import BadRow, iter_rows, to_track


def check_reachable(path: str, output: str, rows: int = 1000) -> None:
    """Before a run: one line (:class:`pipelines.storage.reach.Unreachable`) when the catalog,
    the output or the audio of the first ``rows`` rows is on gs:// and gs:// cannot be reached
    (a gs:// uri further down meets the same answer in its worker, as a dead letter)."""
    from pipelines.storage import reach

    reach.check(path, output)
    reach.check(*(uri for _, uri in itertools.takewhile(lambda row: row[0] <= rows, audio_uris(path))))


def audio_uris(path: str):
    """``(row number, uri)`` of a catalog's usable rows, read lazily (the output check peeks at
    the first); a row that would be a dead letter (a NUL in its uri...) is left out."""
    for number, record in iter_rows(path):
        if isinstance(record, dict):
            try:
                yield number, to_track(record).uri
            except BadRow:
                continue
