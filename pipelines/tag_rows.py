"""The tag job's per-track steps as plain functions: patches keyed by :class:`PatchKey`, then a
track's patch outputs to its row of mean scores (and, with segments, its per-patch rows).

Plain functions (no Beam), so each is tested on its own and pickled into workers as is.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np

from model import dsp
from pipelines import dead_letter
from pipelines.catalog import Track
from runfolder import layout, schema, segments


class PatchKey(NamedTuple):
    """What travels with each patch through inference: its track and place in the track."""

    track_id: str
    index: int  # the patch's position in the track, from 0
    n_patches: int  # the track's patch count
    uri: str
    duration_s: float  # the decoded track's length


def track_patches(track: Track, samples: np.ndarray, *, max_patches: int | None = None):
    """``(PatchKey, patch)`` for each patch of a track."""
    patches = dsp.patch_waveform(samples, max_patches=max_patches)
    duration = len(samples) / dsp.SAMPLE_RATE
    # Keys are UTF-8 from here on (Beam's string coder): undecodable catalog bytes become U+FFFD.
    track_id, uri = dead_letter.printable(track.track_id), dead_letter.printable(track.uri)
    return [(PatchKey(track_id, index, len(patches), uri, duration), patch) for index, patch in enumerate(patches)]


def track_row(track_id: str, patch_outputs, *, tags: list[str], model_name: str, model_version: str) -> dict:
    """Mean the patch outputs of one track into its Parquet row (scores sorted, highest first)."""
    # Patch order, not arrival order (which varies with threads and bundles): the float mean,
    # and so the output bytes, must not change from run to run.
    patch_outputs = sorted(patch_outputs, key=lambda item: item[0].index)
    key = patch_outputs[0][0]
    n_patches, uri, duration = key.n_patches, key.uri, key.duration_s
    if len(patch_outputs) != n_patches:
        raise ValueError(f"track {track_id}: got {len(patch_outputs)} patch outputs for {n_patches} patches")
    return schema.tag_row(
        track_id=track_id,
        uri=uri,
        model_name=model_name,
        model_version=model_version,
        duration_s=duration,
        n_patches=n_patches,
        tags=tags,
        scores=np.mean([outputs["scores"] for _, outputs in patch_outputs], axis=0),
        embedding=np.mean([outputs["embedding"] for _, outputs in patch_outputs], axis=0),
    )


def per_track(keyed, *, tags: list[str], model_name: str, model_version: str, with_segments: bool):
    """A track's grouped patch outputs -> its row, and with ``with_segments`` its segment rows
    on the ``segments`` output."""
    track_id, patch_outputs = keyed
    patch_outputs = list(patch_outputs)
    row = track_row(track_id, patch_outputs, tags=tags, model_name=model_name, model_version=model_version)
    yield row
    if with_segments:
        patches = [(key.index, outputs["scores"]) for key, outputs in patch_outputs]
        for segment in segments.segment_rows(track_id, patches, tags=tags, duration_s=patch_outputs[0][0].duration_s):
            yield beam.pvalue.TaggedOutput(layout.SEGMENTS_KEY, segment)
