"""Synthetic tag runs of a given size on disk (no Beam, no audio): for memory and scale tests."""

from __future__ import annotations

import pathlib

import numpy as np
import pyarrow
import pyarrow.parquet as pq

from runfolder import manifest, writer
from runfolder.schema import TAGS_SCHEMA

N_TAGS, DIM = 50, 200
ROW_BYTES = 4 * DIM + 5 * N_TAGS + 40  # about what a row takes in the file


def _rows(start: int, count: int, rng) -> pyarrow.Table:
    scores = rng.random((count, N_TAGS), dtype=np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")
    tag_names = pyarrow.array([f"tag{k:02d}" for k in range(N_TAGS)])
    entries = pyarrow.StructArray.from_arrays(
        [tag_names.take(pyarrow.array(order.ravel())), pyarrow.array(np.take_along_axis(scores, order, 1).ravel())],
        names=["tag", "score"],
    )
    offsets = pyarrow.array(np.arange(count + 1, dtype=np.int32) * N_TAGS)
    ids = [f"track-{i:08d}" for i in range(start, start + count)]
    model = pyarrow.StructArray.from_arrays(
        [pyarrow.array(["synthetic"] * count), pyarrow.array(["v1"] * count)], names=["name", "version"]
    )
    embedding = pyarrow.ListArray.from_arrays(
        pyarrow.array(np.arange(count + 1, dtype=np.int32) * DIM),
        pyarrow.array(rng.normal(size=count * DIM).astype(np.float32)),
    )
    return pyarrow.Table.from_arrays(
        [
            pyarrow.array(ids),
            pyarrow.array([f"/audio/{i}.mp3" for i in ids]),
            model,
            pyarrow.array(np.full(count, 30.0)),
            pyarrow.array(np.full(count, 10, dtype=np.int32)),
            pyarrow.ListArray.from_arrays(offsets, entries),
            embedding,
        ],
        schema=TAGS_SCHEMA,
    )


def write_big_run(folder: pathlib.Path, megabytes: float, *, files: int = 4, seed: int = 0) -> str:
    """A run of about ``megabytes`` MB in ``files`` shards, written by the one writer."""
    rng = np.random.default_rng(seed)
    rows = int(megabytes * 2**20 / ROW_BYTES)
    per_file = -(-rows // files)
    names = []
    for index in range(files):
        name = f"run-1-{index:05d}-of-{files:05d}.parquet"
        table = _rows(index * per_file, min(per_file, rows - index * per_file), rng)
        (folder / "tags").mkdir(parents=True, exist_ok=True)
        # In the one writer's format, row groups of its size (writing rows as dicts would be slow).
        with pq.ParquetWriter(
            folder / "tags" / name,
            TAGS_SCHEMA,
            compression=writer.CODEC,
            use_compliant_nested_type=False,
            use_dictionary=writer.string_columns(TAGS_SCHEMA),
        ) as out:
            out.write_table(table, row_group_size=writer.ROW_GROUP_BYTES // ROW_BYTES)
        names.append(name)
    manifest.write_tags_manifest(str(folder / "tags"), names, run_id="1")
    return str(folder)
