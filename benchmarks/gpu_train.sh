#!/usr/bin/env bash
# Training examples/s of both front-ends (pons2018 preset, full size) on one GPU and on all visible
# GPUs (MirroredStrategy), from real shards.
#
#   bash benchmarks/gpu_train.sh [WORKDIR]        (default: benchmarks/work/gpu_train)
#
# Self-contained and a few minutes on one H100/H200 node: synthesizes a 240-track demo catalog
# (3.5 s per track), featurizes it (Beam, local), then for each front-end and device set (GPU 0
# alone, then every visible GPU when there are several) trains the pons2018 preset from the shards
# (mixed_float16 as `tagscale train` uses on GPU; 32 examples per GPU, so the global batch grows
# with the GPUs as `--batch-size 32xN` would) for one warm-up epoch and three timed epochs.
# Prints examples/s, writes WORKDIR/gpu_train.json and the table to BENCHMARKS.md (section
# gpu_train). Without a visible GPU it says so and exits 0 without measuring. GPU_TRAIN_SMOKE=1
# runs the same code on the CPU with tiny networks and data (checks the script; its figures are
# not written to BENCHMARKS.md). Needs the project's .venv (tensorflow with CUDA). Not run in CI.
#
# The reproduction recipe of docs/training.md ("Reproducing musicnn on MagnaTagATune"):
#
#   bash benchmarks/gpu_train.sh reproduce MTT_DIR [WORKDIR]
#
# MTT_DIR holds annotations_final.csv and the mp3 folders (0/ ... f/). Builds the catalog with
# musicnn's folder split (SPLIT_DIR=DIR: the train.npy / valid.npy / test.npy lists in DIR
# instead), scores musicnn's own MTT model on the test split (tagscale evaluate: musicnn reports
# 0.9067 ROC-AUC / 0.3831 PR-AUC), featurizes (Beam, DirectRunner on the local cores), trains
# the musicnn preset of the spectrogram front-end with the seed's recipe and scores it the same
# way (WORKDIR/musicnn/evaluate.json), draws its validation loss and learning rate over musicnn's
# own MTT training log from the wheel (WORKDIR/musicnn/curves_vs_musicnn.png, beside eval.json),
# writes its median time per epoch by GPU model to BENCHMARKS.md (section gpu_reproduce), then
# runs the front-end comparison at fractions 0.1, 0.3 and 1.0. docs/training.md has the figures
# to expect and the tolerance to judge them by.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export TF_CPP_MIN_LOG_LEVEL=2
if [ "${1:-}" = "reproduce" ]; then
  MTT="${2:?MTT_DIR}"; WORK="${3:-benchmarks/work/mtt}"
  if [ -f "$WORK/train.npy" ]; then
    echo "gpu_train: reproduce takes MTT_DIR [WORKDIR]; for split lists set SPLIT_DIR=$WORK" >&2; exit 2
  fi
  SPLIT=(); [ -z "${SPLIT_DIR:-}" ] || SPLIT=(--split lists --train "$SPLIT_DIR/train.npy" --valid "$SPLIT_DIR/valid.npy" --test "$SPLIT_DIR/test.npy")
  mkdir -p "$WORK"
  T() { echo "+ tagscale $*"; PYTHONPATH=. "$PY" -m infra.cli "$@"; }
  T catalog mtt --annotations "$MTT/annotations_final.csv" --audio-root "$MTT" "${SPLIT[@]}" --output "$WORK/mtt.parquet"
  "$PY" -c "import pyarrow.parquet as pq, pyarrow.compute as pc, sys; t = pq.read_table(sys.argv[1]); \
pq.write_table(t.filter(pc.equal(t['split'], 'test')), sys.argv[2])" "$WORK/mtt.parquet" "$WORK/mtt-test.parquet"
  T pretrained fetch
  T tag --catalog "$WORK/mtt-test.parquet" --model musicnn-mtt --output "$WORK/tags-musicnn-mtt"
  T evaluate --tags "$WORK/tags-musicnn-mtt" --labels "$WORK/mtt.parquet" --split test
  [ -f "$WORK/features/metadata.json" ] || T featurize --catalog "$WORK/mtt.parquet" --output "$WORK/features" --top-k 50 --num-shards 64
  T train --features "$WORK/features" --frontend spectrogram --preset musicnn --epochs "${EPOCHS:-600}" --job-dir "$WORK/musicnn"
  PYTHONPATH=. "$PY" -m trainer.musicnn_logs "$WORK/musicnn" --log MTT_musicnn
  PYTHONPATH=. "$PY" - "$WORK/musicnn" <<'EOF'
import json, statistics, subprocess, sys
from benchmarks.common import update_benchmarks_md
job = sys.argv[1]
history = json.load(open(f"{job}/history.json"))
times = [entry["epoch_time_s"] for _, entry in sorted(history.items(), key=lambda kv: int(kv[0]))][1:]
query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
gpu = subprocess.run(query, capture_output=True, text=True).stdout.strip().splitlines()[0] or "unknown GPU"
evaluation = json.load(open(f"{job}/eval.json"))
median = statistics.median(times)
update_benchmarks_md("gpu_reproduce", "\n".join([
    "## The musicnn reproduction on MagnaTagATune (`benchmarks/gpu_train.sh reproduce`)", "",
    "| GPU | preset | epochs | median s per epoch (first left out) | test ROC-AUC | test PR-AUC |",
    "|---|---|---:|---:|---:|---:|",
    f"| {gpu} | musicnn | {len(times) + 1} | {median:.1f} | {evaluation['roc_auc']:.4f} | {evaluation['pr_auc']:.4f} |",
]))
print(f"{gpu}: median {median:.1f} s per epoch; BENCHMARKS.md (gpu_reproduce) updated")
EOF
  T tag --catalog "$WORK/mtt-test.parquet" --model "$WORK/musicnn/export" --output "$WORK/tags-musicnn"
  T evaluate --tags "$WORK/tags-musicnn" --labels "$WORK/mtt.parquet" --split test --json > "$WORK/musicnn/evaluate.json"
  T compare --features "$WORK/features" --output "$WORK/compare" --fractions 0.1,0.3,1.0 --epochs "${COMPARE_EPOCHS:-200}"
  exit 0
fi
WORK="${1:-benchmarks/work/gpu_train}"
mkdir -p "$WORK"

PYTHONPATH=. "$PY" - "$WORK" <<'EOF'
import argparse, gc, json, os, sys, time
work = sys.argv[1]
smoke = os.environ.get("GPU_TRAIN_SMOKE") == "1"
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
if not gpus and not smoke:
    print("gpu_train: no GPU visible to TensorFlow; nothing measured (GPU_TRAIN_SMOKE=1 checks the script on CPU)")
    sys.exit(0)
import keras
from benchmarks.common import update_benchmarks_md
from infra.demo import catalog as demo_catalog
from model import network
from pipelines import featurize
from trainer import build, flags, inputs, task

print(f"GPUs: {[g.name for g in gpus]}", flush=True)
n_tracks, epochs = (24, 1) if smoke else (240, 3)
# the smoke run's tiny networks: what `tagscale train --frontend-filters 2 --backend-channels 8 --dense-units 16` builds
tiny = argparse.Namespace(preset="pons2018", frontend_filters=2, backend_channels=8, dense_units=16, dropout=None,
                          batch_norm_momentum=None)
features_dir = os.path.join(work, "features-smoke" if smoke else "features")
if not os.path.exists(os.path.join(features_dir, "metadata.json")):
    t = time.perf_counter()
    catalog = demo_catalog.make_demo_catalog(os.path.join(work, "catalog"), n_tracks=n_tracks, seed=0, duration_s=3.5)
    featurize.run(["--catalog", catalog, "--output", features_dir, "--top-k", "16"])
    print(f"demo data: {time.perf_counter() - t:.0f} s", flush=True)

_, mixed = task.device_setup()  # mixed_float16 on GPU, as tagscale train
features = inputs.open_features(features_dir)
n = features.split_examples("train")
device_sets = {"1 GPU": ["/gpu:0"]} if gpus else {"CPU": ["/cpu:0"]}
if len(gpus) > 1:
    device_sets[f"{len(gpus)} GPUs"] = [f"/gpu:{i}" for i in range(len(gpus))]
results = {"device": [g.name for g in gpus] or ["CPU (smoke)"], "mixed_precision": mixed, "examples": n, "runs": []}
for frontend in ("waveform", "spectrogram"):
    for name, devices in device_sets.items():
        strategy = tf.distribute.MirroredStrategy(devices)
        batch = 32 * len(devices)  # 32 per GPU: the global batch grows with the GPUs
        data = inputs.make_dataset(features, "train", frontend, batch_size=batch, training=True, n_examples=n)
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = network.build_model(frontend, features.n_tags, "pons2018",
                                        **(flags.network_overrides(tiny, frontend) if smoke else {}))
            train_model = build.compile_for_training(model, features.n_tags, 1e-3)
        train_model.fit(data, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing
        start = time.perf_counter()
        train_model.fit(data, epochs=epochs, verbose=0, shuffle=False)
        seconds = time.perf_counter() - start
        row = {"frontend": frontend, "devices": name, "replicas": len(devices), "global_batch": batch,
               "params": model.count_params(), "examples_s": epochs * n / seconds}
        results["runs"].append(row)
        print(f"{frontend:<12} {name:<7} batch {batch:>4}  {row['examples_s']:8.1f} examples/s", flush=True)
        del train_model, model
        gc.collect()
for row in results["runs"]:
    one = next(r for r in results["runs"] if r["frontend"] == row["frontend"] and r["replicas"] == 1)
    row["speedup"] = row["examples_s"] / one["examples_s"]
with open(os.path.join(work, "gpu_train.json"), "w") as handle:
    json.dump(results, handle, indent=2)
print(f"wrote {work}/gpu_train.json")
if not smoke:
    lines = [
        "## Training on one GPU and on all visible GPUs (`benchmarks/gpu_train.sh`)",
        "",
        f"Devices: {', '.join(results['device'])}; pons2018 preset, mixed_float16, 32 examples per GPU, "
        f"{n} training examples of the demo catalog read from the shards; {epochs} timed epochs after one warm-up.",
        "",
        "| front-end | devices | global batch | params | examples/s | speed-up |",
        "|---|---|---:|---:|---:|---:|",
    ] + [
        f"| {r['frontend']} | {r['devices']} | {r['global_batch']} | {r['params']:,} | {r['examples_s']:.0f} | "
        f"{r['speedup']:.2f}x |" for r in results["runs"]
    ]
    update_benchmarks_md("gpu_train", "\n".join(lines))
    print("updated BENCHMARKS.md (gpu_train)")
gc.collect(); gc.freeze()
EOF
