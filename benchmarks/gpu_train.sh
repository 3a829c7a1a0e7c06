#!/usr/bin/env bash
# Training steps/s of both front-ends (seed preset, full size) on one GPU, from real shards.
#
#   bash benchmarks/gpu_train.sh [WORKDIR]        (default: benchmarks/work/gpu_train)
#
# Self-contained and under 5 minutes on one H100/H200: synthesizes a 240-track demo catalog
# (3.5 s per track), featurizes it (Beam, local), then for each front-end trains the seed preset
# (batch 32, mixed_float16 as `tagscale train` uses on GPU) for one warm-up epoch and three timed
# epochs from the shards, and again from the same tensors in memory, printing steps/s per source
# and writing them to WORKDIR/gpu_train.json. Needs the project's .venv (tensorflow with CUDA).
# Not run in CI (no GPU there).
#
# The reproduction recipe of the README ("Reproducing musicnn on MagnaTagATune"):
#
#   bash benchmarks/gpu_train.sh reproduce MTT_DIR SPLIT_DIR [WORKDIR]
#
# MTT_DIR holds annotations_final.csv and the mp3 folders (0/ ... f/); SPLIT_DIR the widely
# used train.npy / valid.npy / test.npy split arrays. Builds the catalog, featurizes it (Beam,
# DirectRunner on the local cores), trains the musicnn preset of the spectrogram front-end with
# the seed's recipe (JOB/eval.json: compare with musicnn's 0.9067 ROC-AUC / 0.3831 PR-AUC), then
# runs the front-end comparison at fractions 0.1, 0.3 and 1.0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export TF_CPP_MIN_LOG_LEVEL=2
if [ "${1:-}" = "reproduce" ]; then
  MTT="${2:?MTT_DIR}"; SPLITS="${3:?SPLIT_DIR}"; WORK="${4:-benchmarks/work/mtt}"
  mkdir -p "$WORK"
  T() { echo "+ tagscale $*"; PYTHONPATH=. "$PY" -m infra.cli "$@"; }
  T catalog mtt --annotations "$MTT/annotations_final.csv" --audio-root "$MTT" \
    --train "$SPLITS/train.npy" --valid "$SPLITS/valid.npy" --test "$SPLITS/test.npy" --output "$WORK/mtt.parquet"
  [ -f "$WORK/features/metadata.json" ] || T featurize --catalog "$WORK/mtt.parquet" --output "$WORK/features" --top-k 50 --num-shards 64
  T train --features "$WORK/features" --frontend spectrogram --preset musicnn --epochs "${EPOCHS:-600}" --job-dir "$WORK/musicnn"
  T compare --features "$WORK/features" --output "$WORK/compare" --fractions 0.1,0.3,1.0 --epochs "${COMPARE_EPOCHS:-200}"
  exit 0
fi
WORK="${1:-benchmarks/work/gpu_train}"
mkdir -p "$WORK"

"$PY" - "$WORK" <<'EOF'
import gc, json, os, sys, time
work = sys.argv[1]
import numpy as np, tensorflow as tf, keras
from infra import demo_catalog
from pipelines import featurize
from model import network
from trainer import inputs, task

gpus = tf.config.list_physical_devices("GPU")
print(f"GPUs: {[g.name for g in gpus]}", flush=True)
features_dir = os.path.join(work, "features")
if not os.path.exists(os.path.join(features_dir, "metadata.json")):
    t = time.perf_counter()
    catalog = demo_catalog.make_demo_catalog(os.path.join(work, "catalog"), n_tracks=240, seed=0, duration_s=3.5)
    featurize.run(["--catalog", catalog, "--output", features_dir, "--top-k", "16"])
    print(f"demo data: {time.perf_counter() - t:.0f} s", flush=True)

strategy, mixed = task.device_setup()  # mixed_float16 on GPU, as tagscale train
features = inputs.open_features(features_dir)
n, batch = features.split_examples("train"), 32
steps = -(-n // batch)
results = {"device": [g.name for g in gpus], "mixed_precision": mixed, "batch_size": batch, "examples": n, "runs": []}
for frontend in ("waveform", "spectrogram"):
    shards = inputs.make_dataset(features, "train", frontend, batch_size=batch, training=True, n_examples=n)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in inputs.make_dataset(features, "train", frontend, batch_size=256)])
    memory = (tf.data.Dataset.from_tensor_slices((np.concatenate(xs), np.concatenate(ys))).cache()
              .shuffle(512, seed=0).batch(batch).prefetch(tf.data.AUTOTUNE))
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = network.build_model(frontend, features.n_tags, "seed")
        train_model = task.compile_for_training(model, features.n_tags, 1e-3)
    seconds = {"shards": 0.0, "memory": 0.0}
    for data in (shards, memory):
        train_model.fit(data, epochs=1, verbose=0, shuffle=False)
    for _ in range(3):
        for name, data in (("shards", shards), ("memory", memory)):
            t = time.perf_counter()
            train_model.fit(data, epochs=1, verbose=0, shuffle=False)
            seconds[name] += time.perf_counter() - t
    row = {"frontend": frontend, "params": model.count_params(),
           **{f"{k}_steps_s": 3 * steps / v for k, v in seconds.items()}}
    row["ratio"] = row["shards_steps_s"] / row["memory_steps_s"]
    results["runs"].append(row)
    print(f"{frontend:<12} {row['params']:>10,} params  shards {row['shards_steps_s']:.1f} steps/s  "
          f"memory {row['memory_steps_s']:.1f} steps/s  ratio {row['ratio']:.2f}", flush=True)
with open(os.path.join(work, "gpu_train.json"), "w") as handle:
    json.dump(results, handle, indent=2)
print(f"wrote {work}/gpu_train.json")
gc.collect(); gc.freeze()
EOF
