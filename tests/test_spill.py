"""The spill: a decoded track written once between featurize's stages and read back exactly."""

import numpy as np
import pytest

from model import dsp, features
from pipelines import spill


def test_spill_round_trip_and_raw_record_batch(tmp_path):
    samples = np.random.default_rng(0).normal(0, 0.2, size=16000 * 7).astype(np.float32)
    patches = dsp.patch_waveform(samples)
    log_mel = spill.LogMel()(patches)
    np.testing.assert_allclose(log_mel, dsp.log_mel_patches(patches).numpy(), rtol=1e-6, atol=1e-6)
    ref = spill.TrackRef("t", "train", len(patches), 7.0, ("a", "b"), spill.spill_path(str(tmp_path), "t"))
    spill.write_track(ref.path, patches, log_mel)
    pcm, back = spill.read_track(ref)
    np.testing.assert_array_equal(back, log_mel)
    np.testing.assert_allclose(pcm / features.WAVEFORM_SCALE, patches, atol=0.5 / features.WAVEFORM_SCALE + 1e-7)
    rows = spill.raw_record_batch(ref, back).to_pylist()
    assert [row["patch_index"] for row in rows] == [[0], [1]]
    assert rows[1]["tags"] == [b"a", b"b"] and rows[0]["track_id"] == [b"t"]
    np.testing.assert_array_equal(np.array(rows[1]["log_mel"], np.float32), log_mel[1].reshape(-1))


def test_a_spill_file_is_named_by_a_hash_of_any_id(tmp_path):
    names = {spill.spill_path(str(tmp_path), track_id) for track_id in ("a", "../../etc/passwd", "b/c", "caf\udce9")}
    assert len(names) == 4
    for name in names:
        assert name.startswith(str(tmp_path) + "/") and "/" not in name[len(str(tmp_path)) + 1 :]


def test_a_short_spill_file_is_refused_not_misread(tmp_path):
    patches = dsp.patch_waveform(np.random.default_rng(1).normal(0, 0.2, 16000 * 7).astype(np.float32))
    ref = spill.TrackRef("t", "train", len(patches), 7.0, (), spill.spill_path(str(tmp_path), "t"))
    spill.write_track(ref.path, patches, dsp.log_mel_patches(patches).numpy())
    with open(ref.path, "r+b") as handle:
        handle.truncate(len(patches) * (spill.WAVEFORM_BYTES + spill.LOG_MEL_BYTES) - 4)
    with pytest.raises(IOError, match=f"spill file {ref.path} has .* bytes, expected {len(patches)} patches"):
        spill.read_track(ref)
