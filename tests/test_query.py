"""query: DuckDB over real tag Parquet written with the pipeline's own schema."""

import json

import pyarrow
import pyarrow.parquet as pq
import pytest

from infra.cli import main as cli
from runfolder.schema import TAGS_SCHEMA
from runtime.errors import TagscaleError
from tagruns import query


@pytest.fixture
def tags_dir(tmp_path):
    rows = []
    for i, (a, b) in enumerate([(0.9, 0.2), (0.4, 0.8), (0.6, 0.55)]):
        scores = sorted([{"tag": "piano", "score": a}, {"tag": "drums", "score": b}], key=lambda s: -s["score"])
        rows.append(
            {
                "track_id": f"t{i}",
                "uri": f"/a/t{i}.mp3",
                "model": {"name": "m", "version": "v"},
                "duration_s": 30.0,
                "n_patches": 10,
                "scores": scores,
                "embedding": [0.0, 1.0],
            }
        )
    (tmp_path / "tags").mkdir()
    pq.write_table(
        pyarrow.Table.from_pylist(rows, schema=TAGS_SCHEMA), tmp_path / "tags" / "run-1-00000-of-00001.parquet"
    )
    return str(tmp_path)


def test_top_orders_tracks_by_score(tags_dir):
    rows = query.top(query.connect(tags_dir), "piano", 2).fetchall()
    assert [(r[0], r[3]) for r in rows] == [("t0", 0.9), ("t2", 0.6)]


def test_track_lists_its_tags(tags_dir):
    assert query.track(query.connect(tags_dir), "t1").fetchall() == [("drums", 0.8, "m"), ("piano", 0.4, "m")]


def test_stats_counts_above_half_and_quantiles(tags_dir):
    result = query.stats(query.connect(tags_dir))
    columns = [d[0] for d in result.description]
    by_tag = {row[0]: dict(zip(columns, row)) for row in result.fetchall()}
    assert by_tag["piano"]["tracks_above_0_5"] == 2 and by_tag["drums"]["tracks_above_0_5"] == 2
    assert by_tag["piano"]["median"] == 0.6 and by_tag["piano"]["max"] == 0.9


def test_sql_over_the_tags_view(tags_dir):
    assert query.sql(query.connect(tags_dir), "SELECT count(*) FROM tags WHERE n_patches = 10").fetchone() == (3,)


def test_unknown_tag_track_and_bad_sql_are_clear_errors(tags_dir, tmp_path):
    connection = query.connect(tags_dir)
    with pytest.raises(TagscaleError, match="unknown tag 'violin'; the tags are: drums, piano"):
        query.top(connection, "violin")
    with pytest.raises(TagscaleError, match="unknown track 'nope'"):
        query.track(connection, "nope")
    with pytest.raises(TagscaleError, match="SQL failed"):
        query.sql(connection, "SELEC 1")
    with pytest.raises(TagscaleError, match="no tag output"):
        query.connect(str(tmp_path / "empty"))


def test_cli_table_and_json(tags_dir, capsys):
    assert query.main(["--tags", tags_dir, "top", "drums", "--limit", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["track_id", "uri", "model", "score"] and table[2].split()[0] == "t1"
    assert query.main(["--tags", tags_dir, "--json", "track", "t0"]) == 0
    assert json.loads(capsys.readouterr().out)[0] == {"tag": "piano", "score": 0.9, "model": "m"}


def _write_run(root, names, tracks=3):
    """A run whose manifest lists ``names``, each file holding ``tracks`` rows of the fixture's kind."""
    (root / "tags").mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(names):
        rows = [
            {
                "track_id": f"f{n}-t{i}",
                "uri": f"/a/f{n}-t{i}.mp3",
                "model": {"name": "m", "version": "v"},
                "duration_s": 30.0,
                "n_patches": 10,
                "scores": [{"tag": "piano", "score": 0.25 * (i + 1)}, {"tag": "drums", "score": 0.1}],
                "embedding": [0.0, 1.0],
            }
            for i in range(tracks)
        ]
        pq.write_table(pyarrow.Table.from_pylist(rows, schema=TAGS_SCHEMA), root / "tags" / name)
    (root / "tags" / "manifest.json").write_text(json.dumps({"files": list(names)}))
    return str(root)


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("tagscale query: error: ") and err.count("\n") == 1, err
    assert all(word in err for word in words), err


def test_a_manifest_naming_sql_is_refused_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the injected COPY would write
    hostile = "run.parquet']); COPY (SELECT 42) TO 'pwned.csv'; --"
    run = _write_run(tmp_path / "run", ["run.parquet"])
    (tmp_path / "run" / "tags" / "manifest.json").write_text(json.dumps({"files": [hostile]}))
    assert cli(["query", "--tags", run, "stats"]) == 2
    _one_line_error(capsys, "not a plain Parquet file name")
    (tmp_path / "run" / "tags" / "run.parquet").rename(tmp_path / "run" / "tags" / hostile)
    assert cli(["query", "--tags", run, "stats"]) == 2  # refused even where such a file exists
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("name", ["it's a run", "run']); COPY (SELECT 42) TO 'pwned.csv'; --"])
def test_quotes_and_sql_in_the_tags_path_are_a_path(tmp_path, capsys, monkeypatch, name):
    """Paths reach DuckDB as data, never as SQL text: a quote works, an injected COPY runs nothing."""
    monkeypatch.chdir(tmp_path)
    run = _write_run(tmp_path / name, ["a.parquet", "b.parquet"])
    assert cli(["query", "--tags", run, "--json", "top", "piano", "--limit", "2"]) == 0
    assert [row["track_id"] for row in json.loads(capsys.readouterr().out)] == ["f0-t2", "f1-t2"]
    assert cli(["query", "--tags", run, "stats"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize(
    "statement, target",
    [
        ("SELECT content FROM read_text('{secret}')", None),
        ("COPY (SELECT * FROM tags) TO '{out}/copy.csv'", "copy.csv"),
        ("COPY (SELECT 1 AS x) TO '{run}/tags/a.parquet' (FORMAT parquet, USE_TMP_FILE false)", None),
        ("ATTACH '{out}/other.duckdb' AS other", "other.duckdb"),
        ("INSTALL httpfs", None),
        ("SET enable_external_access = true", None),
    ],
)
def test_sql_reads_only_the_run_unless_allow_files(tmp_path, capsys, statement, target):
    run = _write_run(tmp_path / "run", ["a.parquet"])
    secret = tmp_path / "secret.txt"
    secret.write_text("not in the run\n")
    before = (tmp_path / "run" / "tags" / "a.parquet").read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    text = statement.format(secret=secret, out=out, run=run)
    assert cli(["query", "--tags", run, "sql", text]) == 2
    _one_line_error(capsys, "SQL failed", "--allow-files")
    assert list(out.iterdir()) == [] and (tmp_path / "run" / "tags" / "a.parquet").read_bytes() == before
    assert cli(["query", "--tags", run, "--json", "sql", "SELECT count(*) AS n FROM tag_scores"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 6}]
    if target or "read_text" in statement:  # the same statement is allowed when asked for
        assert cli(["query", "--tags", run, "--json", "sql", text, "--allow-files"]) == 0
        printed = capsys.readouterr().out
        assert (out / target).exists() if target else "not in the run" in printed


def test_tables_escape_control_characters_and_json_keeps_them(tmp_path, capsys):
    ids = ["\x1b]0;pwned title\x07", "\x1b[31mred\x1b[0m", "nul\x00byte", "caf\u00e9 \u202eevil"]
    (tmp_path / "tags").mkdir()
    rows = [
        {
            "track_id": track_id,
            "uri": f"/a/{i}.mp3",
            "model": {"name": "m", "version": "v"},
            "duration_s": 30.0,
            "n_patches": 10,
            "scores": [{"tag": "piano", "score": 0.9 - 0.1 * i}],
            "embedding": [0.0, 1.0],
        }
        for i, track_id in enumerate(ids)
    ]
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=TAGS_SCHEMA), tmp_path / "tags" / "a.parquet")
    assert query.main(["--tags", str(tmp_path), "top", "piano"]) == 0
    table = capsys.readouterr().out
    assert not any(ch in table for ch in "\x1b\x07\x00\u202e")
    assert [line.split("  ")[0] for line in table.splitlines()[2:]] == [
        "\\x1b]0;pwned title\\x07",
        "\\x1b[31mred\\x1b[0m",
        "nul\\x00byte",
        "caf\u00e9 \\u202eevil",
    ]
    assert query.main(["--tags", str(tmp_path), "--json", "top", "piano"]) == 0
    assert [row["track_id"] for row in json.loads(capsys.readouterr().out)] == ids


def test_a_gcs_run_gives_the_same_answers_as_on_local_disk(tmp_path, capsys):
    from gcs_emulator import running_emulator

    run = _write_run(tmp_path / "run", ["part-0.parquet", "part-1.parquet", "part-2.parquet"], tracks=4)
    commands = [["stats"], ["sql", "select count(*) from tags"], ["track", "f2-t3"], ["top", "piano", "--limit", "5"]]
    local = []
    for command in commands:
        assert cli(["query", "--tags", run, *command]) == 0
        local.append(capsys.readouterr().out)
    assert local[1].splitlines()[2].strip() == "12"  # every row of the three files, once
    with running_emulator("query-test") as client:
        bucket = client.bucket("query-test")
        for path in (tmp_path / "run" / "tags").iterdir():
            bucket.blob(f"runs/r1/tags/{path.name}").upload_from_filename(str(path))
        for command, want in zip(commands, local):
            assert cli(["query", "--tags", "gs://query-test/runs/r1", *command]) == 0
            assert capsys.readouterr().out == want
        assert (
            cli(["query", "--tags", "gs://query-test/runs/r1", "sql", "SELECT * FROM read_text('/etc/hostname')"]) == 2
        )
        _one_line_error(capsys, "--allow-files")
