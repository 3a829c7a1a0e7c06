"""The field's datasets as tagscale catalogs, with their official splits.

    tagscale catalog mtt --annotations annotations_final.csv --audio-root DIR --output CATALOG.parquet
        [--train LIST --valid LIST --test LIST] [--top-k 50]
    tagscale catalog jamendo --train TSV --valid TSV --test TSV --audio-root DIR --output CATALOG.parquet [--top-k 50]

Both write a Parquet catalog with the columns ``track_id`` (string), ``uri`` (string), ``tags``
(list of strings) and ``split`` (``train`` / ``valid`` / ``test``); ``tagscale featurize`` then
puts every track in the catalog's split instead of its own hash split.

MagnaTagATune (``mtt``): ``annotations_final.csv`` is tab-separated (fields may be quoted):
``clip_id``, 188 tag columns of 0/1, ``mp3_path``. The catalog keeps the ``--top-k`` tags with
the most positive clips (50, as musicnn; ties keep the file's column order). Split lists hold
one clip id or mp3 path per line, or are the ``.npy`` arrays of ``"index<TAB>mp3_path"``
strings that the widely used split files ship (the index points into those files' own label
array, so the path is what is matched); clips in no list are left out. Without lists, every
clip is kept and split by featurize's hash of the track id (10% valid, 10% test).

MTG-Jamendo (``jamendo``): each split TSV has the header ``TRACK_ID, ARTIST_ID, ALBUM_ID, PATH,
DURATION, TAGS`` and then rows whose sixth and later fields are tags such as ``genre---rock``
or ``mood/theme---happy`` (kept as written). ``--top-k`` keeps the most frequent tags of the
training split.
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import os

from model.errors import TagscaleError
from pipelines import fileio, outputs

SPLITS = ("train", "valid", "test")
JAMENDO_HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION")


class DatasetError(TagscaleError):
    """A dataset file that cannot be turned into a catalog; the message says which and why."""


def _read_bytes(path: str) -> bytes:
    from apache_beam.io.filesystems import FileSystems

    if not fileio.exists(path):
        raise DatasetError(f"{path}: file not found")
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        return handle.read()


def _text(path: str) -> str:
    try:
        return _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error.reason})") from None


def _uri(audio_root: str, relative: str) -> str:
    return fileio.join(audio_root.rstrip("/"), relative.lstrip("/"))


def top_tags(counts: collections.Counter, order: list[str], top_k: int) -> list[str]:
    """The ``top_k`` tags with the highest counts; ties keep ``order`` (stable sort)."""
    ranked = sorted((tag for tag in order if counts[tag] > 0), key=lambda tag: -counts[tag])
    return ranked[:top_k]


# ----------------------------------------------------------------------------- MagnaTagATune


def read_split_list(path: str) -> set[str]:
    """Clip ids or mp3 paths, one per line, or a ``.npy`` array of "index<TAB>path" strings."""
    if path.lower().endswith(".npy"):
        import numpy as np

        try:
            array = np.load(io.BytesIO(_read_bytes(path)), allow_pickle=False)
        except ValueError as error:
            raise DatasetError(f"{path}: not a .npy array of strings ({error})") from None
        if array.dtype.kind not in "US":
            raise DatasetError(f"{path}: a split array must hold strings, got dtype {array.dtype}")
        entries = [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in array.ravel()]
    else:
        entries = _text(path).splitlines()
    keys = set()
    for entry in entries:
        entry = entry.strip()
        if entry:
            keys.add(entry.split("\t", 1)[1].strip() if "\t" in entry else entry)
    return keys


def read_mtt(path: str) -> tuple[list[str], list[dict]]:
    """``(tag columns, rows)`` of annotations_final.csv; each row ``{clip_id, mp3_path, tags: set}``."""
    reader = csv.reader(io.StringIO(_text(path)), delimiter="\t")
    header = [field.strip() for field in next(reader, [])]
    if not header or header[0] != "clip_id" or header[-1] != "mp3_path" or len(header) < 3:
        raise DatasetError(f"{path}: expected a tab-separated header clip_id, TAG..., mp3_path")
    tags = header[1:-1]
    rows = []
    for number, fields in enumerate(reader, 2):
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            raise DatasetError(f"{path}: line {number} has {len(fields)} fields, the header {len(header)}")
        flags = fields[1:-1]
        if any(flag.strip() not in ("0", "1") for flag in flags):
            raise DatasetError(f"{path}: line {number}: tag columns must be 0 or 1")
        rows.append(
            {
                "clip_id": fields[0].strip(),
                "mp3_path": fields[-1].strip(),
                "tags": {tag for tag, flag in zip(tags, flags) if flag.strip() == "1"},
            }
        )
    return tags, rows


def mtt_catalog(
    annotations: str, audio_root: str, *, lists: dict[str, str] | None = None, top_k: int = 50
) -> list[dict]:
    """Catalog rows of MagnaTagATune (see the module docstring); ``lists``: split -> list file."""
    tags, rows = read_mtt(annotations)
    counts = collections.Counter(tag for row in rows for tag in row["tags"])
    vocabulary = top_tags(counts, tags, top_k)
    kept = set(vocabulary)
    split_of = {}
    for split, path in (lists or {}).items():
        for key in read_split_list(path):
            if split_of.setdefault(key, split) != split:
                raise DatasetError(f"{key} is in both the {split_of[key]} and the {split} list")
    out = []
    for row in rows:
        split = split_of.get(row["mp3_path"]) or split_of.get(row["clip_id"])
        if lists and split is None:
            continue  # not in the official split
        out.append(
            {
                "track_id": row["clip_id"],
                "uri": _uri(audio_root, row["mp3_path"]),
                "tags": [tag for tag in vocabulary if tag in row["tags"] and tag in kept],
                "split": split,
            }
        )
    if lists and not out:
        raise DatasetError("no clip of the annotations is in the split lists (they hold clip ids or mp3 paths)")
    return out


# ----------------------------------------------------------------------------- MTG-Jamendo


def read_jamendo(path: str) -> list[dict]:
    """Rows ``{track_id, path, tags: list}`` of one MTG-Jamendo split TSV."""
    lines = [line for line in _text(path).splitlines() if line.strip()]
    header = tuple(field.strip() for field in lines[0].split("\t")) if lines else ()
    if header[: len(JAMENDO_HEADER)] != JAMENDO_HEADER:
        raise DatasetError(f"{path}: expected the header {', '.join(JAMENDO_HEADER)}, TAGS (tab-separated)")
    rows = []
    for number, line in enumerate(lines[1:], 2):
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) < len(JAMENDO_HEADER) or not fields[0] or not fields[3]:
            raise DatasetError(f"{path}: line {number} needs TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION and tags")
        rows.append({"track_id": fields[0], "path": fields[3], "tags": [tag for tag in fields[5:] if tag]})
    return rows


def jamendo_catalog(split_files: dict[str, str], audio_root: str, *, top_k: int = 50) -> list[dict]:
    """Catalog rows of MTG-Jamendo from its three split TSVs (see the module docstring)."""
    by_split = {split: read_jamendo(split_files[split]) for split in SPLITS}
    counts = collections.Counter(tag for row in by_split["train"] for tag in row["tags"])
    order = list(dict.fromkeys(tag for row in by_split["train"] for tag in row["tags"]))
    kept = set(top_tags(counts, order, top_k))
    seen, out = {}, []
    for split in SPLITS:
        for row in by_split[split]:
            if seen.setdefault(row["track_id"], split) != split:
                raise DatasetError(
                    f"track {row['track_id']} is in both the {seen[row['track_id']]} and the {split} split"
                )
            out.append(
                {
                    "track_id": row["track_id"],
                    "uri": _uri(audio_root, row["path"]),
                    "tags": [tag for tag in row["tags"] if tag in kept],
                    "split": split,
                }
            )
    return out


# ----------------------------------------------------------------------------- output and command


def write_catalog(rows: list[dict], output: str) -> None:
    """Write ``rows`` as a Parquet catalog: track_id, uri, tags (list<string>), split (nullable)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    if not output.lower().endswith(".parquet"):
        raise DatasetError(f"--output must end in .parquet, got {output}")
    schema = pa.schema(
        [("track_id", pa.string()), ("uri", pa.string()), ("tags", pa.list_(pa.string())), ("split", pa.string())]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    if "://" not in output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with FileSystems.create(output) as handle:
        handle.write(buffer.getvalue())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale catalog",
        description="Write a Parquet catalog (track_id, uri, tags, split) of MagnaTagATune or MTG-Jamendo "
        "with its official split.",
    )
    datasets = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    mtt = datasets.add_parser("mtt", help="MagnaTagATune from annotations_final.csv (top-50 tags, as musicnn)")
    mtt.add_argument("--annotations", required=True, help="annotations_final.csv (tab-separated)")
    for split in SPLITS:
        mtt.add_argument(
            f"--{split}", help=f"{split} clips: clip ids or mp3 paths one per line, or a .npy of 'index<TAB>path'"
        )
    jamendo = datasets.add_parser("jamendo", help="MTG-Jamendo from its split TSVs")
    for split in SPLITS:
        jamendo.add_argument(f"--{split}", required=True, help=f"the {split} split TSV")
    for sub in (mtt, jamendo):
        sub.add_argument("--audio-root", required=True, help="directory the dataset's relative audio paths start from")
        sub.add_argument("--output", required=True, help="the catalog to write (.parquet, local or gs://)")
        sub.add_argument("--top-k", type=int, default=50, help="keep this many most frequent tags (50)")
    return parser


def _is_catalog(path: str) -> bool:
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            return {"track_id", "uri"} <= set(pq.read_schema(io.BytesIO(handle.read())).names)
    except Exception:  # not Parquet, unreadable: not a catalog to replace
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.output = outputs.check_output_file(args.output, replaceable=_is_catalog, what="Parquet catalog")
    if args.top_k < 1:
        raise DatasetError(f"--top-k must be at least 1, got {args.top_k}")
    if args.dataset == "mtt":
        lists = {split: getattr(args, split) for split in SPLITS if getattr(args, split)}
        if lists and len(lists) != len(SPLITS):
            raise DatasetError("give all three of --train, --valid and --test, or none (hash split)")
        rows = mtt_catalog(args.annotations, args.audio_root, lists=lists, top_k=args.top_k)
    else:
        rows = jamendo_catalog({split: getattr(args, split) for split in SPLITS}, args.audio_root, top_k=args.top_k)
    write_catalog(rows, args.output)
    counts = collections.Counter(row["split"] or "hash split" for row in rows)
    tags = len({tag for row in rows for tag in row["tags"]})
    print(
        f"wrote {args.output}: {len(rows)} tracks "
        f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}), {tags} tags"
    )
    return 0
