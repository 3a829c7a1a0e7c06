"""tagdata.ScoreMatrix, the one reader of tag Parquet scores into a (tracks x tags) matrix: what
similar/probe/calibrate/diff compute on (tagdata.load) and what the explorer ranks (read_run)."""

import numpy as np
import pyarrow
from explore_run import write_run

from infra.explore import data as explore_data
from tagruns import tagdata


def test_the_cli_readers_and_the_explorer_read_the_same_scores(tmp_path):
    expected = write_run(tmp_path, tracks=12)["scores"]
    table = tagdata.load(str(tmp_path))
    run = explore_data.read_run(0, str(tmp_path))
    ids = run.table.column("track_id").to_pylist()
    assert sorted(ids) == sorted(table.track_ids) == sorted(expected)
    for tag in table.tags:
        mine = run.table.column(run.column(tag)).to_numpy(zero_copy_only=False)
        for row, track_id in enumerate(ids):
            assert mine[row] == table.scores[table.row(track_id), table.tags.index(tag)]
            assert mine[row] == np.float32(expected[track_id][tag])


def test_a_tag_a_track_lacks_stays_missing_and_new_tags_grow_columns():
    entry = pyarrow.struct([("tag", pyarrow.string()), ("score", pyarrow.float32())])
    scores = pyarrow.array(
        [[{"tag": "a", "score": 0.5}], [{"tag": "b", "score": 0.25}, {"tag": "a", "score": 1.0}]],
        pyarrow.list_(entry),
    )
    matrix = tagdata.ScoreMatrix(3)
    matrix.add(1, scores)
    assert matrix.tags == {"a": 0, "b": 1}
    values = matrix.values[:, :2]
    assert np.isnan(values[0]).all() and np.isnan(values[1, 1])
    assert values[1, 0] == 0.5 and values[2].tolist() == [1.0, 0.25]
