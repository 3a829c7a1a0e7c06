"""The one reader of a tag run, and the one rule every command reads a run by.

query, explore, similar, index, probe, calibrate, evaluate and diff all open a run with
:class:`TagRun`; the rule is applied here, once:

1. Only the files ``tags/manifest.json`` lists (a run written before manifests: its
   ``tags/*.parquet``, less a segments table's ``segments-*`` files, which are not tracks). A
   file listed twice is read once.
2. Every file is in the track table's schema (:data:`runfolder.schema.TAGS_SCHEMA`): a file
   that is not (another schema, not Parquet, unreadable) is one line naming it.
3. One model per run: rows of two models (name or version) are refused with one line naming
   them; scores of different models live on different scales.
4. One row per track: a track with rows in two files keeps the row of the file listed last
   (within a file, its last row): the newest. A run tagscale wrote has no such track; a
   hand-edited one may.

Files are opened through :mod:`pipelines.storage.filesystem` (local or gs://) and read as they
are scanned: a query reads the columns and row groups it needs, never the whole run, and
nothing is copied to local disk. Deciding rule 4 reads the ``track_id`` column once (only when
a track has two rows is the run's table built in memory).
"""

from __future__ import annotations

import numpy as np
import pyarrow
import pyarrow.compute as pc
import pyarrow.dataset
import pyarrow.parquet as pq

from pipelines.storage import filesystem
from runfolder import layout, manifest
from runfolder.schema import TAGS_SCHEMA
from runtime.errors import TagscaleError

SCAN_BATCH_ROWS = 4096  # rows per batch a scan hands DuckDB: a few MB of tag rows


class TagRun:
    """A tag run folder, read by the rule above.

    Raises (on construction)
    ------------------------
    TagscaleError
        No tag output in ``run_dir``; a file that is not tag output; rows of two models.
    """

    def __init__(self, run_dir: str):
        self.source = run_dir
        self.files = manifest.tag_files(run_dir)
        if not self.files:
            raise TagscaleError(
                f"no tag output in {run_dir}: expected {layout.join(run_dir, layout.TAGS, layout.MANIFEST)} "
                "(run `tagscale tag` first)"
            )
        self.segment_files = manifest.segment_files(run_dir)
        self.model: dict | None = None  # {"name", "version"} of the run's rows; None when it has none
        self._fs, self._paths = _resolve(self.files)
        self._keep = self._check()

    # ------------------------------------------------------------------ the rule

    def _check(self) -> list[np.ndarray] | None:
        """Rules 2-4 over the ``track_id`` and ``model`` columns: the model, and per file the
        rows to keep (None: every row, no track has two)."""
        ids, models = [], set()
        for path, parquet in zip(self.files, self._parquet_files()):
            _check_schema(path, parquet.schema_arrow)
            try:
                for batch in parquet.iter_batches(columns=["track_id", "model"], batch_size=65536):
                    ids.append(batch.column(0))
                    models.update(_models(batch.column(1)))
            except (OSError, pyarrow.ArrowException) as error:
                raise TagscaleError(f"cannot read tag file {path}: {_first_line(error)}") from error
            ids.append(None)  # the end of a file
        self.model = _one_model(models, self.source)
        keep = _newest_rows(ids)
        self._ids = ids if keep is not None else None  # kept only to build the view of rule 4
        return keep

    # ------------------------------------------------------------------ reading

    def _parquet_files(self) -> list[pq.ParquetFile]:
        found = []
        for path, inner in zip(self.files, self._paths):
            try:
                found.append(pq.ParquetFile(inner, filesystem=self._fs))
            except (OSError, pyarrow.ArrowException) as error:
                raise TagscaleError(f"cannot read tag file {path}: {_first_line(error)}") from error
        return found

    def num_rows(self) -> int:
        """Tracks in the run (rule 4 applied), from the files' footers when no track has two rows."""
        if self._keep is not None:
            return int(sum(mask.sum() for mask in self._keep))
        return sum(parquet.metadata.num_rows for parquet in self._parquet_files())

    def batches(self, columns: list[str] | None = None, *, dictionary_tags: bool = False):
        """The run's rows a row group at a time (as Arrow tables, in manifest order), with
        ``columns`` only; ``dictionary_tags`` reads the scores' tag names dictionary-encoded."""
        columns = columns or TAGS_SCHEMA.names
        wanted = pyarrow.schema([TAGS_SCHEMA.field(name) for name in columns])
        for index, (path, parquet) in enumerate(zip(self.files, self._parquet_files())):
            if dictionary_tags:
                parquet = pq.ParquetFile(
                    self._paths[index], filesystem=self._fs, read_dictionary=[_tag_column_path(parquet)]
                )
            first = 0
            for group in range(parquet.num_row_groups):
                try:
                    part = parquet.read_row_group(group, columns=columns)
                    if not dictionary_tags:
                        part = part.cast(wanted)
                except (OSError, pyarrow.ArrowException, ValueError) as error:
                    raise TagscaleError(f"cannot read tag file {path}: {_first_line(error)}") from error
                if self._keep is not None:
                    part = part.filter(pyarrow.array(self._keep[index][first : first + part.num_rows]))
                first += parquet.metadata.row_group(group).num_rows
                yield part

    def table(self, columns: list[str] | None = None) -> pyarrow.Table:
        """The run's rows (rule 4 applied) as one table in the track schema (``columns`` only)."""
        columns = columns or TAGS_SCHEMA.names
        empty = pyarrow.schema([TAGS_SCHEMA.field(name) for name in columns]).empty_table()
        return pyarrow.concat_tables([empty, *self.batches(columns)])

    def dataset(self) -> pyarrow.dataset.Dataset:
        """The listed files as one pyarrow dataset in the track schema, scanned lazily and with a
        bounded read-ahead (:class:`BoundedDataset`). Rule 4 is not in it: use :meth:`register`,
        which applies it."""
        plain = pyarrow.dataset.dataset(self._paths, filesystem=self._fs, format="parquet", schema=TAGS_SCHEMA)
        return BoundedDataset(list(plain.get_fragments()), TAGS_SCHEMA, plain.format, self._fs)

    def register(self, connection, name: str = "tags") -> None:
        """Make ``name`` the run in a DuckDB ``connection``, scanned lazily, rule 4 applied.

        Without a track of two rows: the dataset itself. With some: a view over one dataset per
        file, each less the ids that have a newer row elsewhere (a small table per file), so the
        scan stays lazy; only a file holding one track twice makes it the run's table in memory.
        """
        if self._keep is None:
            connection.register(name, self.dataset())
            return
        dropped = self._dropped_ids()
        if dropped is None:
            connection.register(name, self.table())
            return
        parts = []
        for index, ids in enumerate(dropped):
            part = f"{name}_file{index}"
            connection.register(part, self._file_dataset(index))
            if ids is None:
                parts.append(f"SELECT * FROM {part}")
            else:
                connection.register(f"{part}_older", pyarrow.table({"track_id": ids}))
                parts.append(f"SELECT * FROM {part} WHERE track_id NOT IN (SELECT track_id FROM {part}_older)")
        connection.execute(f"CREATE VIEW {name} AS " + " UNION ALL ".join(parts))

    def _file_dataset(self, index: int) -> pyarrow.dataset.Dataset:
        plain = pyarrow.dataset.dataset([self._paths[index]], filesystem=self._fs, format="parquet", schema=TAGS_SCHEMA)
        return BoundedDataset(list(plain.get_fragments()), TAGS_SCHEMA, plain.format, self._fs)

    def _dropped_ids(self) -> list | None:
        """Per file, the ids rule 4 drops from it (None: none); None when a file holds one
        track twice (then the ids alone cannot say which of its rows to drop)."""
        found, batches = [], []
        for chunk in self._ids:
            if chunk is not None:
                batches.append(chunk)
                continue
            ids = pyarrow.chunked_array(batches, pyarrow.string())
            keep = self._keep[len(found)]
            batches = []
            if keep.all():
                found.append(None)
                continue
            older = ids.filter(pyarrow.array(~keep))
            if pc.any(pc.is_in(older, value_set=ids.filter(pyarrow.array(keep)).combine_chunks())).as_py():
                return None
            found.append(older.combine_chunks())
        return found

    def segment_dataset(self) -> pyarrow.dataset.Dataset | None:
        """The segments table's files as a lazily scanned dataset; None when the run has none."""
        if self.segment_files is None:
            return None
        fs, paths = _resolve(self.segment_files)
        try:
            return pyarrow.dataset.dataset(paths, filesystem=fs, format="parquet")
        except (OSError, pyarrow.ArrowException) as error:
            raise TagscaleError(f"cannot read the segments table of {self.source}: {_first_line(error)}") from error

    def read_segments(self, paths: list[str], track_id: str) -> pyarrow.Table | None:
        """A track's rows of the segment ``paths`` (those its id hashes to); None when none."""
        if not paths:
            return None
        fs, inner = _resolve(paths)
        tables = []
        for path, local in zip(paths, inner):
            try:
                tables.append(pq.read_table(local, filesystem=fs, filters=[("track_id", "=", track_id)]))
            except (OSError, pyarrow.ArrowException) as error:
                raise TagscaleError(f"unreadable segment file {path}: {_first_line(error)}") from error
        return pyarrow.concat_tables(tables, promote_options="default")

    def dead_letters(self, columns: list[str]) -> pyarrow.Table | None:
        """The run's dead-letter records (``columns`` of them); None when it has none."""
        files = manifest.dead_letter_files(self.source)
        if not files:
            return None
        fs, inner = _resolve(files)
        try:
            tables = [pq.read_table(path, filesystem=fs, columns=columns) for path in inner]
            return pyarrow.concat_tables(tables, promote_options="default")
        except (KeyError, OSError, pyarrow.ArrowException) as error:
            raise TagscaleError(f"unreadable dead letters in {self.source}: {_first_line(error)}") from error


class BoundedDataset(pyarrow.dataset.FileSystemDataset):
    """A dataset whose scans read one file and a row group or two ahead: DuckDB scans a
    registered dataset through its ``scanner``, whose defaults read 4 files and 16 batches ahead
    (measured: query's peak memory then grew by 160 MB from a 50 MB to a 200 MB run, and by
    under 50 MB with this bound)."""

    def scanner(self, columns=None, filter=None, **options):  # noqa: A002 (pyarrow's name)
        options.setdefault("batch_size", SCAN_BATCH_ROWS)
        options.setdefault("batch_readahead", 1)
        options.setdefault("fragment_readahead", 1)
        return pyarrow.dataset.FileSystemDataset.scanner(self, columns=columns, filter=filter, **options)


def run_model(run_dir: str) -> dict | None:
    """The ``{"name", "version"}`` of a run folder's rows (None: no rows), from the ``model``
    column alone: what :attr:`TagRun.model` says, without reading the track ids (cheap at any
    size). The folder must have tag output.

    Raises
    ------
    TagscaleError
        A file that is not tag output or cannot be read; rows of two models.
    """
    files = manifest.tag_files(run_dir)
    fs, paths = _resolve(files)
    models = set()
    for path, inner in zip(files, paths):
        try:
            parquet = pq.ParquetFile(inner, filesystem=fs)
            _check_schema(path, parquet.schema_arrow)
            for batch in parquet.iter_batches(columns=["model"], batch_size=65536):
                models.update(_models(batch.column(0)))
        except (OSError, pyarrow.ArrowException) as error:
            raise TagscaleError(f"cannot read tag file {path}: {_first_line(error)}") from error
    return _one_model(models, run_dir)


def _models(column) -> set:
    """The distinct (name, version) pairs of a ``model`` column."""
    keys = pc.binary_join_element_wise(column.field("name"), column.field("version"), "\x00")
    return {tuple(key.split("\x00", 1)) for key in pc.unique(keys).to_pylist() if key}


def _one_model(models: set, source: str) -> dict | None:
    if len(models) > 1:
        shown = ", ".join(f"{name} version {version}" for name, version in sorted(models, key=str)[:3])
        raise TagscaleError(
            f"the tag output in {source} holds rows of {len(models)} models ({shown}): one model per "
            "run folder; tag each model into a folder of its own"
        )
    return None if not models else dict(zip(("name", "version"), next(iter(models))))


def _resolve(files: list[str]):
    """One filesystem for a run's files (they share a folder) and each file's path in it."""
    fs = filesystem.resolve(files[0])[0]
    return fs, [filesystem.resolve(path)[1] for path in files]


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _check_schema(path: str, schema: pyarrow.Schema) -> None:
    missing = [name for name in TAGS_SCHEMA.names if name not in schema.names]
    if missing:
        raise TagscaleError(f"{path} is not tag output: no column {', '.join(missing)}")
    try:  # a cast, not an equality test: writers name list items differently ("item", "element")
        schema.empty_table().select(TAGS_SCHEMA.names).cast(TAGS_SCHEMA)
    except (pyarrow.ArrowException, ValueError) as error:
        raise TagscaleError(f"{path} is not tag output: {_first_line(error)}") from error


def _tag_column_path(parquet: pq.ParquetFile) -> str:
    """The Parquet path of the scores' tag strings (``scores.list.item.tag``)."""
    schema = parquet.schema
    return next(
        path
        for path in (schema.column(i).path for i in range(len(schema)))
        if path.startswith("scores.") and path.endswith(".tag")
    )


def _newest_rows(ids: list) -> list[np.ndarray] | None:
    """Per file, which rows rule 4 keeps; None when every track has one row. ``ids`` are the
    ``track_id`` batches of every file in order, each file closed by a None."""
    chunks = [chunk for chunk in ids if chunk is not None]
    total = sum(len(chunk) for chunk in chunks)
    if not total or pc.count_distinct(pyarrow.chunked_array(chunks, pyarrow.string())).as_py() == total:
        return None
    positions = pyarrow.table(
        {"track_id": pyarrow.chunked_array(chunks, pyarrow.string()), "at": pyarrow.array(np.arange(total))}
    )
    newest = positions.group_by("track_id").aggregate([("at", "max")]).column("at_max").to_numpy()
    keep = np.zeros(total, dtype=bool)
    keep[newest] = True
    masks, start, size = [], 0, 0
    for chunk in ids:
        if chunk is None:
            masks.append(keep[start : start + size])
            start, size = start + size, 0
        else:
            size += len(chunk)
    return masks
