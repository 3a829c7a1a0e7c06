"""query: DuckDB over real tag Parquet written with the pipeline's own schema."""

import json

import pyarrow
import pyarrow.parquet as pq
import pytest

from model.errors import TagscaleError
from pipelines import query, tag


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
        pyarrow.Table.from_pylist(rows, schema=tag.TAGS_SCHEMA), tmp_path / "tags" / "run-1-00000-of-00001.parquet"
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
