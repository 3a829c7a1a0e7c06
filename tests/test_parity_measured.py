"""Pretrained parity at the level measured, not at 0.1: tagscale's whole path (decode, its own
log-mel in the serving model, mean over patches) against musicnn's own TF 1 graph on
musicnn's own librosa front end, for the real clips.

Measured on the 13 real clips: at most 2.7e-7 (the trumpet clip), 1.5e-8 to 2.7e-7 per clip.
This file checks the four shortest clips (the longest of them 25 s) so it stays cheap; the
full sweep with its table is tests/test_pretrained.py::test_same_audio_tagscale_path_vs_musicnn_way.
"""
import numpy as np
import pytest
import soundfile

from model.musicnn_reference import musicnn_log_mel_patches
from test_pretrained import cache_dir, package_dir, reference_graphs, serving_models, tagscale_scores  # noqa: F401 (fixtures)

MEASURED_MAX_DIFF = 2.7e-7
TOLERANCE = 1e-6


@pytest.mark.slow
def test_tagscale_path_equals_musicnn_to_the_measured_level(real_clips, reference_graphs, serving_models):
    name = "musicnn-mtt"
    clips = sorted(real_clips, key=lambda clip: soundfile.info(str(clip)).duration)[:4]
    diffs = []
    for clip in clips:
        ours = tagscale_scores(clip, serving_models[name])
        theirs = reference_graphs[name](musicnn_log_mel_patches(clip)).mean(axis=0)
        diffs.append(float(np.abs(ours - theirs).max()))
    print(f"\nmax |score diff| per clip: {', '.join(f'{d:.2e}' for d in diffs)}")
    assert max(diffs) <= TOLERANCE
