"""The field's datasets as tagscale catalogs, with their official splits.

    tagscale catalog mtt --annotations annotations_final.csv --audio-root DIR --output CATALOG.parquet
        [--split folder | --split lists --train LIST --valid LIST --test LIST] [--top-k 50]
    tagscale catalog jamendo --train TSV --valid TSV --test TSV --audio-root DIR --output CATALOG.parquet
        [--top-k K] [--audio-quality normal|low]

Both write a Parquet catalog with the columns ``track_id`` (string), ``uri`` (string), ``tags``
(list of strings) and ``split`` (``train`` / ``valid`` / ``test``); ``tagscale featurize`` then
puts every track in the catalog's split instead of its own hash split.

MagnaTagATune (``mtt``): ``annotations_final.csv`` is tab-separated (fields may be quoted):
``clip_id``, 188 tag columns of 0/1, ``mp3_path`` (``f/artist-album-NN-title-30-59.mp3``). The
catalog keeps the ``--top-k`` tags with the most positive clips (50, as musicnn; ties keep the
file's column order); a clip with none of them keeps an empty tag list.

``--split folder`` (the default without lists) is musicnn's split: the mp3's folder, a hex
digit, puts folders 0-b in train, c in valid and d-f in test, and the clips musicnn found
missing or corrupt (:data:`MTT_BROKEN_CLIPS`) are left out. One song's clips all sit in one
folder, so no song is on both sides. ``--split lists`` (the default when lists are given)
takes the clips of three list files: clip ids or mp3 paths one per line; musicnn-training's
ground-truth files (``clip_id<TAB>[0.0, 1.0, ...]``, the key is the clip id); or the ``.npy``
arrays of ``"index<TAB>mp3_path"`` strings that the widely used split files ship (the index
points into those files' own label array, so the path is what is matched). Clips in no list
are left out.

MTG-Jamendo (``jamendo``): each split TSV has the header ``TRACK_ID, ARTIST_ID, ALBUM_ID, PATH,
DURATION, TAGS`` and then rows whose sixth and later fields are tags such as ``genre---rock``
or ``mood/theme---happy`` (kept as written). Every tag of the given split files is kept unless
``--top-k`` asks for the most frequent tags of the training split. ``--audio-quality low``
points at the low-quality audio, named ``NN/ID.low.mp3`` where PATH says ``NN/ID.mp3``.
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import os

from model.features import SPLITS  # the catalog's split column; MTT_SPLITS below are layouts
from pipelines.storage import fileio, outputs
from runtime.errors import TagscaleError

MTT_SPLITS = ("folder", "lists")
# The clips musicnn-training leaves out of every split of MagnaTagATune: one mp3 missing from
# the archive and two that do not decode.
MTT_BROKEN_CLIPS = frozenset({"35644", "55753", "57881"})
AUDIO_QUALITIES = ("normal", "low")
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


def _split_key(entry: str) -> str:
    """The clip id or mp3 path one line of a split list names."""
    if "\t" not in entry:
        return entry
    first, rest = (field.strip() for field in entry.split("\t", 1))
    # musicnn-training's "clip_id<TAB>[label vector]" is keyed by the id; the .npy arrays'
    # "index<TAB>mp3_path" by the path, as their index points into their own label array.
    return first if rest.startswith("[") else rest


def read_split_list(path: str) -> set[str]:
    """Clip ids or mp3 paths, one per line, musicnn-training's ``id<TAB>[vector]`` lines, or a
    ``.npy`` array of "index<TAB>path" strings."""
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
    return {_split_key(entry.strip()) for entry in entries if entry.strip()}


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


def mtt_folder_split(mp3_path: str) -> str:
    """musicnn's split of one clip by its folder (``f/...mp3`` -> ``test``): 0-b, c, d-f."""
    parts = mp3_path.replace("\\", "/").strip("/").split("/")
    folder = parts[-2].lower() if len(parts) > 1 else ""
    if len(folder) != 1 or folder not in "0123456789abcdef":
        raise DatasetError(f"{mp3_path}: the folder split needs an mp3_path in a folder 0-9 or a-f")
    number = int(folder, 16)
    return "train" if number < 12 else "valid" if number == 12 else "test"


def mtt_catalog(
    annotations: str,
    audio_root: str,
    *,
    split: str = "folder",
    lists: dict[str, str] | None = None,
    top_k: int = 50,
) -> list[dict]:
    """Catalog rows of MagnaTagATune (see the module docstring).

    Parameters
    ----------
    split : {"folder", "lists"}
        musicnn's split by folder, or the clips of ``lists`` (split -> list file).
    """
    if split not in MTT_SPLITS:
        raise DatasetError(f"--split must be one of {', '.join(MTT_SPLITS)}, got {split!r}")
    if split == "lists" and sorted(lists or {}) != sorted(SPLITS):
        raise DatasetError("--split lists needs all three of --train, --valid and --test")
    if split == "folder" and lists:
        raise DatasetError("the folder split takes no list files (give --split lists to use them)")
    tags, rows = read_mtt(annotations)
    counts = collections.Counter(tag for row in rows for tag in row["tags"])
    vocabulary = top_tags(counts, tags, top_k)
    split_of = {}
    for name, path in (lists or {}).items():
        for key in read_split_list(path):
            if split_of.setdefault(key, name) != name:
                raise DatasetError(f"{key} is in both the {split_of[key]} and the {name} list")
    out = []
    for row in rows:
        if split == "folder":
            if row["clip_id"] in MTT_BROKEN_CLIPS:
                continue
            clip_split = mtt_folder_split(row["mp3_path"])
        else:
            clip_split = split_of.get(row["mp3_path"]) or split_of.get(row["clip_id"])
            if clip_split is None:
                continue  # not in the official split
        out.append(
            {
                "track_id": row["clip_id"],
                "uri": _uri(audio_root, row["mp3_path"]),
                "tags": [tag for tag in vocabulary if tag in row["tags"]],
                "split": clip_split,
            }
        )
    if split == "lists" and not out:
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


def jamendo_audio_path(path: str, quality: str) -> str:
    """The audio file of a split's PATH at ``quality``: ``NN/ID.mp3`` or ``NN/ID.low.mp3``."""
    if quality == "normal":
        return path
    if not path.lower().endswith(".mp3"):
        raise DatasetError(f"{path}: the low-quality audio is named NN/ID.low.mp3, so PATH must end in .mp3")
    return path[: -len(".mp3")] + ".low.mp3"


def jamendo_catalog(
    split_files: dict[str, str], audio_root: str, *, top_k: int | None = None, audio_quality: str = "normal"
) -> list[dict]:
    """Catalog rows of MTG-Jamendo from its three split TSVs (see the module docstring).

    Parameters
    ----------
    top_k : int or None
        None keeps every tag of the split files; K keeps the K most frequent training tags.
    audio_quality : {"normal", "low"}
    """
    if audio_quality not in AUDIO_QUALITIES:
        raise DatasetError(f"--audio-quality must be one of {', '.join(AUDIO_QUALITIES)}, got {audio_quality!r}")
    by_split = {split: read_jamendo(split_files[split]) for split in SPLITS}
    kept = None
    if top_k is not None:
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
                    "uri": _uri(audio_root, jamendo_audio_path(row["path"], audio_quality)),
                    "tags": [tag for tag in row["tags"] if kept is None or tag in kept],
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
    mtt.add_argument(
        "--split",
        choices=MTT_SPLITS,
        help="folder: musicnn's split by mp3 folder (0-b train, c valid, d-f test; its 3 broken clips left out); "
        "lists: the clips of --train/--valid/--test (default: lists when they are given, else folder)",
    )
    for split in SPLITS:
        mtt.add_argument(
            f"--{split}",
            help=f"{split} clips for --split lists: clip ids or mp3 paths one per line, musicnn-training's "
            "'id<TAB>[vector]' files, or a .npy of 'index<TAB>path'",
        )
    mtt.add_argument("--top-k", type=int, default=50, help="keep this many most frequent tags (%(default)s)")
    jamendo = datasets.add_parser("jamendo", help="MTG-Jamendo from its split TSVs")
    for split in SPLITS:
        jamendo.add_argument(f"--{split}", required=True, help=f"the {split} split TSV")
    jamendo.add_argument(
        "--top-k", type=int, help="keep only this many most frequent tags of the training split (default: every tag)"
    )
    jamendo.add_argument(
        "--audio-quality",
        choices=AUDIO_QUALITIES,
        default="normal",
        help="low: the NN/ID.low.mp3 files of the low-quality download (%(default)s)",
    )
    for sub in (mtt, jamendo):
        sub.add_argument("--audio-root", required=True, help="directory the dataset's relative audio paths start from")
        sub.add_argument("--output", required=True, help="the catalog to write (.parquet, local or gs://)")
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
    if args.top_k is not None and args.top_k < 1:
        raise DatasetError(f"--top-k must be at least 1, got {args.top_k}")
    if args.dataset == "mtt":
        lists = {split: getattr(args, split) for split in SPLITS if getattr(args, split)}
        split = args.split or ("lists" if lists else "folder")
        rows = mtt_catalog(args.annotations, args.audio_root, split=split, lists=lists, top_k=args.top_k)
    else:
        rows = jamendo_catalog(
            {split: getattr(args, split) for split in SPLITS},
            args.audio_root,
            top_k=args.top_k,
            audio_quality=args.audio_quality,
        )
    write_catalog(rows, args.output)
    counts = collections.Counter(row["split"] for row in rows)
    tags = len({tag for row in rows for tag in row["tags"]})
    untagged = sum(not row["tags"] for row in rows)
    print(
        f"wrote {args.output}: {len(rows)} tracks "
        f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}), {tags} tags, {untagged} tracks with none"
    )
    return 0
