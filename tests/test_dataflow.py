"""featurize and tag build and translate for DataflowRunner, offline (--dry_run=True --no_auth).

A dry run builds the Dataflow job from the pipeline, stages the project with setup.py (Beam
runs `setup.py sdist` for --setup_file) and returns without submitting. It proves the graph,
the options and the staging; it does not prove that workers start (that needs a project).
"""

import pathlib

import pytest

from pipelines import beam_util, featurize, tag

REPO = pathlib.Path(__file__).resolve().parents[1]


def dataflow_args(tmp_path):
    return [
        "--runner=DataflowRunner",
        "--project=tagscale-demo",
        "--region=europe-west1",
        "--temp_location=gs://tagscale-demo-bucket/tmp",
        "--staging_location=gs://tagscale-demo-bucket/staging",
        "--dry_run=True",
        "--no_auth",
        f"--setup_file={REPO / 'setup.py'}",
        "--sdk_container_image=europe-docker.pkg.dev/tagscale-demo/tagscale/worker:0.1.0",
        "--experiments=use_runner_v2",
        "--machine_type=n2-standard-4",
        "--max_num_workers=50",
        "--autoscaling_algorithm=THROUGHPUT_BASED",
    ]


def transform_names(result) -> set[str]:
    return {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}


@pytest.fixture
def catalog(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text("track_id,uri,tags\na,gs://tagscale-demo-bucket/a.mp3,rock\n")
    return path


@pytest.mark.slow
def test_featurize_builds_for_dataflow(catalog, tmp_path):
    assert beam_util.is_dry_run(dataflow_args(tmp_path)) and not beam_util.is_local(dataflow_args(tmp_path))
    config, beam_args = featurize.parse_args(
        ["--catalog", str(catalog), "--output", str(tmp_path / "out"), *dataflow_args(tmp_path)]
    )
    pipeline = beam_util.make_pipeline(beam_args)
    featurize.build_pipeline(pipeline, config)
    result = pipeline.run()
    names = transform_names(result)
    for stage in (
        "ReadCatalog",
        "DecodeTracks",
        "Spill",
        "Analyze",
        "WriteTransformFn",
        "ShardCounts",
        "WriteShards",
        "WriteDeadLetter",
    ):
        assert stage in names, stage
    options = result.job.options.get_all_options()
    assert options["sdk_container_image"].endswith("worker:0.1.0") and "use_runner_v2" in options["experiments"]
    assert (
        featurize.run(["--catalog", str(catalog), "--output", str(tmp_path / "out2"), *dataflow_args(tmp_path)]) == {}
    )


@pytest.mark.slow
def test_tag_builds_for_dataflow(catalog, tmp_path):
    from made import SMALL_MODEL_TAGS as TAGS
    from made import small_model_dir

    model = small_model_dir(tmp_path)
    config, beam_args = tag.parse_args(
        [
            "--catalog",
            str(catalog),
            "--model",
            model,
            "--output",
            "gs://tagscale-demo-bucket/tags",
            *dataflow_args(tmp_path),
        ]
    )
    pipeline = beam_util.make_pipeline(beam_args)
    tag.build_pipeline(
        pipeline,
        config,
        tags=TAGS,
        info={"name": "small", "version": "v"},
        existing=["gs://tagscale-demo-bucket/tags/tags/run-1-00000-of-00001.parquet"],
        total=1,
        run_id="dry",
    )
    names = transform_names(result := pipeline.run())
    assert {
        "ReadCatalog",
        "ReadCatalog/ParseRows",
        "DecodeTracks",
        "TagTracks",
        "TagTracks/RunInference",
        "WriteTags",
        "WriteDeadLetter",
    } <= names
    assert result.job.options.get_all_options()["max_num_workers"] == 50
    # Tags and dead letters: one writer per file after a shuffle by file, never Beam's sink
    # with a single shard (whose one key funnels every row through one worker).
    assert {
        "WriteTags/WriteParquet/GroupByShard",
        "WriteTags/WriteParquet/WriteShard",
        "WriteDeadLetter/WriteParquet/WriteShard",
    } <= names
    assert not [name for name in names if name.startswith(("WriteTags/", "WriteDeadLetter/")) and "WriteImpl" in name]
