"""tag: plain functions, then real DirectRunner runs with a small model and with musicnn-mtt."""

import json

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from made import SMALL_MODEL_TAGS as TAGS

from model import dsp, export, pretrained
from pipelines import tag, tag_rows
from pipelines.catalog import Track
from pipelines.decode import audio
from runfolder import manifest
from runfolder.schema import TAGS_SCHEMA
from tagruns import query


def test_track_patches_keys_every_patch_with_its_track():
    samples = np.zeros(16000 * 7, np.float32)
    patches = tag_rows.track_patches(Track("t", "/t.wav"), samples)
    assert [key for key, _ in patches] == [
        tag_rows.PatchKey(track_id="t", index=0, n_patches=2, uri="/t.wav", duration_s=7.0),
        tag_rows.PatchKey(track_id="t", index=1, n_patches=2, uri="/t.wav", duration_s=7.0),
    ]
    assert patches[1][0].index == 1 and patches[1][0].n_patches == 2
    assert patches[1][1].shape == (dsp.PATCH_SAMPLES,)


def test_track_row_means_patches_and_sorts_scores():
    outputs = [
        (
            tag_rows.PatchKey("t", 1, 2, "/t.wav", 6.0),
            {"scores": np.array([0.3, 0.7, 0.6]), "embedding": np.array([3.0, 5.0])},
        ),
        (
            tag_rows.PatchKey("t", 0, 2, "/t.wav", 6.0),
            {"scores": np.array([0.1, 0.9, 0.5]), "embedding": np.array([1.0, 3.0])},
        ),
    ]
    row = tag_rows.track_row("t", outputs, tags=TAGS, model_name="m", model_version="v1")
    assert [s["tag"] for s in row["scores"]] == ["mid", "high", "low"]
    np.testing.assert_allclose([s["score"] for s in row["scores"]], [0.8, 0.55, 0.2])
    assert row["embedding"] == [2.0, 4.0] and row["n_patches"] == 2 and row["model"] == {"name": "m", "version": "v1"}
    with pytest.raises(ValueError, match="2 patches"):
        tag_rows.track_row("t", outputs[:1], tags=TAGS, model_name="m", model_version="v1")


def test_per_track_gives_the_row_then_with_segments_one_row_per_patch_in_time_order():
    outputs = [
        (tag_rows.PatchKey("t", 1, 2, "/t.wav", 5.0), {"scores": np.array([0.3, 0.7, 0.6]), "embedding": np.zeros(2)}),
        (tag_rows.PatchKey("t", 0, 2, "/t.wav", 5.0), {"scores": np.array([0.1, 0.9, 0.5]), "embedding": np.zeros(2)}),
    ]
    plain = list(tag_rows.per_track(("t", outputs), tags=TAGS, model_name="m", model_version="v", with_segments=False))
    assert len(plain) == 1 and plain[0]["n_patches"] == 2
    row, *timed = tag_rows.per_track(("t", outputs), tags=TAGS, model_name="m", model_version="v", with_segments=True)
    assert row == plain[0] and {out.tag for out in timed} == {"segments"}
    assert [(out.value["start_s"], out.value["end_s"]) for out in timed] == [(0.0, 2.992), (2.992, 5.0)]
    assert [[item["tag"] for item in out.value["scores"]] for out in timed] == [TAGS, TAGS]
    np.testing.assert_allclose([item["score"] for item in timed[1].value["scores"]], [0.3, 0.7, 0.6], rtol=1e-6)


@pytest.fixture(scope="module")
def tag_catalog(tmp_path_factory, request):
    import soundfile
    from made import synth_tone

    root = tmp_path_factory.mktemp("tag")
    formats = [
        ("wav", "WAV", "PCM_16"),
        ("flac", "FLAC", "PCM_16"),
        ("ogg", "OGG", "VORBIS"),
        ("mp3", "MP3", "MPEG_LAYER_III"),
    ]
    lines = ["track_id,uri,tags"]
    for i in range(10):
        ext, fmt, subtype = formats[i % 4]
        path = root / f"t{i}.{ext}"
        soundfile.write(path, synth_tone(3.5 + i, 44100, channels=2, seed=i), 44100, format=fmt, subtype=subtype)
        lines.append(f"t{i},{path},")
    (root / "text.mp3").write_text("text, not audio\n" * 20)
    lines += [f"gone,{root / 'gone.wav'},", f"text,{root / 'text.mp3'},", "t3,/duplicate/of/t3.wav,"]
    (root / "catalog.csv").write_text("\n".join(lines) + "\n")
    return root


def run_tag(catalog, model, output, *extra):
    return tag.run(["--catalog", str(catalog), "--model", model, "--output", str(output), "--batch-size", "4", *extra])


def read_tags(output):
    return pq.read_table(manifest.tag_files(str(output))).to_pandas().sort_values("track_id").reset_index(drop=True)


@pytest.mark.slow
def test_tags_every_track_once_with_the_models_own_scores(tag_catalog, small_model, tmp_path):
    output = tmp_path / "out"
    summary = run_tag(tag_catalog / "catalog.csv", small_model, output)
    assert summary["tracks_in"] == 13
    assert (summary["tagged"], summary["skipped"], summary["failed"]) == (10, 0, 3)
    assert json.loads((output / "summary.json").read_text())["tagged"] == 10
    table = pq.read_table(manifest.tag_files(str(output)))
    assert table.schema.equals(TAGS_SCHEMA)
    rows = read_tags(output)
    assert list(rows.track_id) == sorted(f"t{i}" for i in range(10))
    model = export.load_serving_model(small_model)
    for row in rows.itertuples():
        samples = audio.decode_audio(row.uri).samples
        patches = dsp.patch_waveform(samples)
        assert row.n_patches == len(patches) and abs(row.duration_s - len(samples) / 16000) < 1e-3
        expected = model.predict(patches)
        got = {s["tag"]: s["score"] for s in row.scores}
        np.testing.assert_allclose([got[t] for t in TAGS], expected["scores"].mean(axis=0), atol=1e-5)
        assert [s["score"] for s in row.scores] == sorted(got.values(), reverse=True)
        np.testing.assert_allclose(row.embedding, expected["embedding"].mean(axis=0), atol=1e-5)
        assert row.model == {"name": "small", "version": model.version}
    failed = {r["track_id"]: r for r in pq.read_table(output / "dead_letter").to_pylist()}
    assert set(failed) == {"gone", "text", "t3"}
    assert failed["gone"]["error"].startswith("file not found") and failed["t3"]["stage"] == "catalog"


@pytest.mark.slow
def test_incremental_reruns_tag_only_new_tracks(tag_catalog, small_model, tmp_path):
    output = tmp_path / "out"
    catalog = tmp_path / "catalog.csv"
    lines = (tag_catalog / "catalog.csv").read_text().splitlines()
    good = [line for line in lines[1:] if line.startswith("t") and "duplicate" not in line]
    catalog.write_text("\n".join([lines[0]] + good[:7]) + "\n")
    first = run_tag(catalog, small_model, output, "--incremental")
    assert (first["tagged"], first["skipped"]) == (7, 0)
    again = run_tag(catalog, small_model, output, "--incremental")
    assert (again["tagged"], again["skipped"], again["tracks_in"]) == (0, 7, 7)
    # The rows of tagged tracks are dropped as they are read, before their other fields are
    # checked: a second row of t1 (with a tag named like a view column) is skipped, not a dead letter; a
    # repeated new id is still one. Every row is accounted for, in the summary and the provenance.
    repeated_new, bad_tagged = good[8].replace(",", ",/another/", 1), "t1,/another/t1.wav,uri"
    catalog.write_text("\n".join([lines[0]] + good + [repeated_new, bad_tagged]) + "\n")
    grown = run_tag(catalog, small_model, output, "--incremental")
    # 13 rows: t0-t9, the text file (a decode failure), the repeated t8 and the second t1
    assert (grown["tagged"], grown["skipped"], grown["failed"], grown["tracks_in"]) == (3, 8, 2, 13)
    recorded = json.loads((output / "tags" / "manifest.json").read_text())["provenance"]["catalog"]
    assert recorded["rows"] == 13
    failed = {row["track_id"]: row for row in pq.read_table(output / "dead_letter").to_pylist()}
    assert sorted(failed) == ["t8", "text"] and failed["t8"]["stage"] == "catalog"
    assert "duplicate track_id" in failed["t8"]["error"]
    rows = read_tags(output)
    assert sorted(rows.track_id) == sorted(f"t{i}" for i in range(10))  # each exactly once
    catalog.write_text("\n".join([lines[0]] + good) + "\n")
    # A full (non-incremental) run replaces the output with identical content.
    before = rows.to_json()
    full = run_tag(catalog, small_model, output)
    assert full["tagged"] == 10 and len(list((output / "tags").glob("*.parquet"))) == 1
    assert read_tags(output).to_json() == before


@pytest.mark.slow
def test_num_shards_3_writes_three_listed_files_read_by_query_and_incremental_once_each(
    tag_catalog, small_model, tmp_path
):
    """`tagscale tag --num-shards 3`: three Parquet files, all in the manifest; `tagscale query`
    counts every row once; an --incremental run over them adds three more and keeps each once."""
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo}
    output, catalog = tmp_path / "out", tmp_path / "catalog.csv"
    lines = (tag_catalog / "catalog.csv").read_text().splitlines()
    catalog.write_text("\n".join(lines[:8]) + "\n")  # t0..t6
    model = ["--model", small_model, "--batch-size", "4", "--num-shards", "3"]
    command = [sys.executable, "-m", "infra.cli", "tag", "--catalog", str(catalog), "--output", str(output), *model]
    first = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    run_id = json.loads((output / "summary.json").read_text())["run_id"]
    listed = json.loads((output / "tags" / "manifest.json").read_text())["files"]
    assert listed == [f"run-{run_id}-{i:05d}-of-00003.parquet" for i in range(3)]
    assert sorted(path.name for path in (output / "tags").glob("*.parquet")) == listed
    count = subprocess.run(
        [sys.executable, "-m", "infra.cli", "query", "--tags", str(output), "--json", "sql"]
        + ["select count(*) AS n, count(DISTINCT track_id) AS ids from tags"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert count.returncode == 0, count.stderr[-2000:]
    assert json.loads(count.stdout) == [{"n": 7, "ids": 7}]

    catalog.write_text("\n".join(lines) + "\n")  # all ten, and the three bad rows
    grown = run_tag(catalog, small_model, output, "--incremental", "--num-shards", "3")
    # t3's second row is skipped with t3 (the run has t3), not a dead letter
    assert (grown["tagged"], grown["skipped"], grown["failed"]) == (3, 8, 2)
    written = json.loads((output / "tags" / "manifest.json").read_text())
    assert len(written["files"]) == 6 and set(listed) < set(written["files"])
    connection = query.connect(str(output))
    assert connection.execute("select count(*), count(DISTINCT track_id) from tags").fetchall() == [(10, 10)]
    assert sorted(read_tags(output).track_id) == sorted(f"t{i}" for i in range(10))
    failed = pq.read_table(manifest.dead_letter_files(str(output))).column("track_id").to_pylist()
    assert sorted(failed) == ["gone", "text"]


@pytest.mark.slow
def test_a_run_records_its_provenance_in_the_manifest_every_file_and_query_stats(
    tag_catalog, small_model, tmp_path, capsys
):
    import importlib.metadata

    output, catalog = tmp_path / "out", tmp_path / "catalog.csv"
    lines = (tag_catalog / "catalog.csv").read_text().splitlines()
    catalog.write_text("\n".join(lines[:4] + lines[-3:]) + "\n")  # t0..t2 and three rows that fail
    assert run_tag(catalog, small_model, output, "--num-shards", "2")["tracks_in"] == 6
    expected = {
        "model": {
            "name": "small",
            "version": export.load_serving_model(small_model).version,
            "license": "as the training data allows",
            "source": small_model,
            "sha256": None,
            "commercial": None,
        },
        "catalog": {"path": str(catalog), "rows": 6},
        "tagscale_version": importlib.metadata.version("tagscale"),
    }
    written = json.loads((output / "tags" / "manifest.json").read_text())
    assert {"files", "run_id", "written_by"} < set(written) and written["provenance"] == expected
    assert len(written["files"]) == 2
    for name in written["files"]:
        assert json.loads(pq.read_schema(output / "tags" / name).metadata[b"tagscale.provenance"]) == expected

    assert query.main(["--tags", str(output), "--json", "stats"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(r["tag"] for r in records) == sorted(TAGS) and all(r["provenance"] == expected for r in records)
    assert query.main(["--tags", str(output), "stats"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert (
        f"catalog: {catalog} (6 rows)" in text
        and "licence: as the training data allows (commercial use: unknown)" in text
    )


def test_require_commercial_refuses_a_model_of_unknown_terms_before_any_work(
    tag_catalog, small_model, tmp_path, capsys
):
    from runtime.errors import run_command

    argv = ["--catalog", str(tag_catalog / "catalog.csv"), "--model", small_model, "--output", str(tmp_path / "out")]
    assert run_command("tag", tag.main, [*argv, "--require-commercial"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "tagscale tag: error: --require-commercial: model small (licence: as the training data allows) "
        "is not known to allow commercial use"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_output_opens_in_duckdb_and_pandas(tag_catalog, small_model, tmp_path):
    output = tmp_path / "out"
    run_tag(tag_catalog / "catalog.csv", small_model, output)
    con = duckdb.connect()
    top = con.execute(
        "SELECT track_id, s.tag FROM (SELECT track_id, scores[1] AS s "
        f"FROM read_parquet('{output}/tags/*.parquet')) ORDER BY track_id"
    ).fetchall()
    assert len(top) == 10 and all(tag_name in TAGS for _, tag_name in top)
    frame = read_tags(output)
    assert frame.scores.map(len).eq(len(TAGS)).all() and frame.embedding.map(len).eq(16).all()


@pytest.mark.slow
def test_musicnn_mtt_tags_the_string_orchestra_clip(pretrained_cache, real_clips, tmp_path):
    clip = next(c for c in real_clips if "string_orchestra" in c.name)
    (tmp_path / "catalog.csv").write_text(f"track_id,uri,tags\nhungarian,{clip},\n")
    summary = tag.run(
        [
            "--catalog",
            str(tmp_path / "catalog.csv"),
            "--model",
            "musicnn-mtt",
            "--cache-dir",
            pretrained_cache,
            "--output",
            str(tmp_path / "out"),
            "--require-commercial",  # ISC: allowed
        ]
    )
    assert summary["tagged"] == 1 and summary["model"]["name"] == "musicnn-mtt"
    recorded = json.loads((tmp_path / "out" / "tags" / "manifest.json").read_text())["provenance"]["model"]
    assert (recorded["license"], recorded["commercial"], recorded["sha256"]) == ("ISC", True, pretrained.WHEEL_SHA256)
    top3 = [s["tag"] for s in read_tags(tmp_path / "out").scores[0][:3]]
    assert {"classical", "strings", "violin"} & set(top3) and top3[0] == "classical"


def test_missing_model_is_one_clear_error(tag_catalog, tmp_path):
    from runtime.errors import TagscaleError

    (tmp_path / "half").mkdir()
    with pytest.raises(TagscaleError, match="missing saved_model.pb"):
        run_tag(tag_catalog / "catalog.csv", str(tmp_path / "half"), tmp_path / "out")
    with pytest.raises(TagscaleError, match="not fetched|unknown model|not a"):
        tag.run(
            ["--catalog", str(tag_catalog / "catalog.csv"), "--model", "musicnn-nope", "--output", str(tmp_path / "o")]
        )


CLI_JOBS = """
import json, sys
from infra import cli
catalog, model, features, tags = sys.argv[1:]
rc = [cli.main(["featurize", "--catalog", catalog, "--output", features, "--num-shards", "1"]),
      cli.main(["tag", "--catalog", catalog, "--model", model, "--output", tags])]
print(json.dumps({"rc": rc, "sklearn": repr(sys.modules.get("sklearn", "never")),
                  "matplotlib": repr(sys.modules.get("matplotlib", "never")),
                  "tensorflow": "tensorflow" in sys.modules}))
"""


@pytest.mark.slow
def test_the_beam_jobs_run_from_the_command_line_without_sklearn_and_matplotlib(tag_catalog, small_model, tmp_path):
    """`tagscale featurize` and `tagscale tag` start TensorFlow without scikit-learn and
    matplotlib, which they never use, and still do their whole job."""
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    good = tmp_path / "catalog.csv"  # the good rows: featurize needs a tagged track to build its vocabulary
    rows = [line for line in (tag_catalog / "catalog.csv").read_text().splitlines()[1:6]]
    good.write_text("track_id,uri,tags\n" + "\n".join(f"{row.rstrip(',')},low;high" for row in rows) + "\n")
    out = subprocess.run(
        [sys.executable, "-c", CLI_JOBS, str(good), small_model, str(tmp_path / "f"), str(tmp_path / "t")],
        cwd=repo,
        # as from a user's shell: importing tf.Transform sets TF_USE_LEGACY_KERAS in this test process
        env={**{k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}, "PYTHONPATH": repo},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # TensorFlow was loaded (whose start-up imports both when they are installed), and both are absent
    assert result == {"rc": [0, 0], "sklearn": "None", "matplotlib": "None", "tensorflow": True}
    assert json.loads((tmp_path / "f" / "metadata.json").read_text())["tracks_ok"] == 5
    assert sorted(read_tags(tmp_path / "t")["track_id"]) == [f"t{i}" for i in range(5)]


@pytest.mark.slow
def test_multi_processing_workers_give_the_default_runs_outputs(tag_catalog, small_model, tmp_path):
    """Worker subprocesses (the nearest thing here to DoFns serialized onto Dataflow workers) tag the
    same tracks with the same scores and dead letters as the default run. Thread counts differ
    between the modes, so float32 sums may differ in the last bits. Measured, scores / embeddings
    (values up to 2.2): 0 / 0 on AVX-512 with oneDNN, 0 / 1.2e-7 with ONEDNN_MAX_CPU_ISA=AVX2,
    1.2e-7 / 9.5e-7 with TF_ENABLE_ONEDNN_OPTS=0."""
    catalog = tag_catalog / "catalog.csv"
    default = run_tag(catalog, small_model, tmp_path / "default")
    multi = run_tag(
        catalog, small_model, tmp_path / "multi", "--direct_running_mode=multi_processing", "--direct_num_workers=2"
    )
    assert {k: default[k] for k in ("tracks_in", "tagged", "failed")} == {
        k: multi[k] for k in ("tracks_in", "tagged", "failed")
    }
    a, b = read_tags(tmp_path / "default"), read_tags(tmp_path / "multi")
    assert list(a.track_id) == list(b.track_id) and len(a) == 10
    assert list(a.n_patches) == list(b.n_patches) and list(a.duration_s) == list(b.duration_s)
    for x, y in zip(a.itertuples(), b.itertuples()):
        assert [s["tag"] for s in x.scores] == [s["tag"] for s in y.scores] or np.allclose(
            sorted(s["score"] for s in x.scores), sorted(s["score"] for s in y.scores), atol=1e-6
        )
        scores = [{s["tag"]: s["score"] for s in row.scores} for row in (x, y)]
        np.testing.assert_allclose([scores[0][t] for t in TAGS], [scores[1][t] for t in TAGS], rtol=0, atol=1e-6)
        np.testing.assert_allclose(x.embedding, y.embedding, rtol=1e-6, atol=1e-6)
    dead = [
        sorted((r["track_id"], r["stage"], r["error"]) for r in pq.read_table(out / "dead_letter").to_pylist())
        for out in (tmp_path / "default", tmp_path / "multi")
    ]
    assert dead[0] == dead[1] and len(dead[0]) == 3
