"""musicnn's own way of tagging, kept as the reference for parity tests and benchmarks.

:class:`MusicnnGraph` is the wheel's TF 1 ``.meta`` graph restored from its checkpoint (not our
Keras re-implementation); :func:`musicnn_log_mel_patches` is musicnn's ``extractor.batch_data``
feature path (librosa) in float32 (musicnn casts to float16 there, which overflows on loud
audio: musicnn's ``10000 * x`` in float16 reaches infinity on loud mel bins). librosa is a test/benchmark
dependency (``pip install -e .[dev]``).
"""

from __future__ import annotations

import numpy as np

from model import dsp


class MusicnnGraph:
    """musicnn's own TF 1 model: the wheel's ``.meta`` graph restored from its checkpoint."""

    def __init__(self, prefix: str):
        import tensorflow as tf
        from tensorflow.core.protobuf import meta_graph_pb2

        meta = meta_graph_pb2.MetaGraphDef()
        with open(prefix + ".meta", "rb") as handle:
            meta.ParseFromString(handle.read())
        # Keep the inference path and the saver's restore ops; drop gradients and Adam updates.
        restore = meta.saver_def.restore_op_name
        stripped = meta_graph_pb2.MetaGraphDef()
        inference = tf.compat.v1.graph_util.extract_sub_graph(meta.graph_def, ["model/Sigmoid", restore])
        stripped.graph_def.CopyFrom(inference)
        stripped.saver_def.CopyFrom(meta.saver_def)
        placeholders = {node.name: node for node in stripped.graph_def.node if node.op == "Placeholder"}
        # model/Placeholder: (batch, 187, 96) log-mel; model/Placeholder_2: is_training (bool).
        if sorted(placeholders) != ["model/Placeholder", "model/Placeholder_2"]:
            raise RuntimeError(f"unexpected inputs of musicnn's graph: {sorted(placeholders)}")
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.train.import_meta_graph(stripped, clear_devices=True)
        self.session = tf.compat.v1.Session(graph=self.graph)
        self.session.run(restore, {meta.saver_def.filename_tensor_name: prefix})

    def __call__(self, log_mel_patches: np.ndarray) -> np.ndarray:
        feed = {"model/Placeholder:0": log_mel_patches, "model/Placeholder_2:0": False}
        return self.session.run("model/Sigmoid:0", feed)


def musicnn_log_mel_patches(path) -> np.ndarray:
    """The musicnn way (its extractor's ``batch_data``), in float32: (n_patches, 187, 96)."""
    import librosa

    audio, sr = librosa.load(path, sr=dsp.SAMPLE_RATE)
    # musicnn fails on tracks shorter than one patch; zero-pad them to one patch as tagscale does.
    audio = np.pad(audio, (0, max(0, (dsp.PATCH_FRAMES - 1) * dsp.HOP_LENGTH - len(audio))))
    mel = librosa.feature.melspectrogram(y=audio, sr=sr, hop_length=256, n_fft=512, n_mels=96).T
    log_mel = np.log10(10000 * mel.astype(np.float32) + 1)  # musicnn casts to float16 here
    n = dsp.PATCH_FRAMES
    return np.stack([log_mel[start : start + n] for start in range(0, log_mel.shape[0] - n + 1, n)])
