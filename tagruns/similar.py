"""similar and index: nearest tracks by cosine similarity of the tag output's embeddings.

    tagscale similar --tags DIR TRACK_ID [--k 10] [--json]
    tagscale similar --tags DIR --audio FILE [--k 10] [--json]
    tagscale index --tags DIR

Exact search is one matrix-vector product over the unit-length embeddings (NumPy). ``index``
builds an approximate inverted-file (IVF) index with faiss (``DIR/index/``) and reports its recall@10 against
exact search; ``similar`` uses it when it matches the current tag files and falls back to exact
search, saying so, when the tag output changed since. Only ``--audio`` decodes audio: that one
file, embedded with the run's own model.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from pipelines.storage import fileio, outputs, ownership
from runtime.errors import TagscaleError
from runtime.terminal import printable
from tagruns import tagdata

INDEX_DIR = "index"
INDEX_FILE = "similar.faiss"
INDEX_INFO = "similar.json"
SHARED_TOP = 5  # a neighbour's shared tags: those among both tracks' top 5


def exact_neighbours(
    unit: np.ndarray, query: np.ndarray, k: int, exclude: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``k`` highest cosine similarities to ``query`` (highest first), and the similarities.

    ``unit`` holds unit-length rows; ``exclude`` is a row left out (the query track itself).
    """
    similarities = unit @ (query / max(float(np.linalg.norm(query)), 1e-12)).astype(np.float32)
    if exclude is not None:
        similarities[exclude] = -np.inf
    k = min(k, len(similarities) - (exclude is not None))
    if k <= 0:
        return np.array([], np.int64), np.array([], np.float32)
    top = np.argpartition(-similarities, k - 1)[:k]
    top = top[np.lexsort((top, -similarities[top]))]  # highest first; ties by row, so results are stable
    return top, similarities[top]


def shared_tags(query_scores: np.ndarray, scores: np.ndarray, tags: list[str]) -> list[str]:
    """Tags among the top :data:`SHARED_TOP` of both tracks, in the query's order."""
    query_top = np.argsort(-query_scores, kind="stable")[:SHARED_TOP]
    other_top = set(np.argsort(-scores, kind="stable")[:SHARED_TOP].tolist())
    return [tags[i] for i in query_top if i in other_top]


# ----------------------------------------------------------------------------- index


def _fingerprint(tags_dir: str) -> list[list]:
    """Names and sizes of the tag files: an index is current only while they are unchanged."""
    from pipelines.storage import filesystem
    from runfolder import manifest

    files = manifest.tag_files(tags_dir)
    return [[path.rsplit("/", 1)[-1], filesystem.size(path)] for path in files]


def default_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: about 4 sqrt(n), and at least 39 training points per list."""
    return max(1, min(int(4 * np.sqrt(n)), n // 39))


def build_index(unit: np.ndarray, *, nlist: int | None = None, nprobe: int = 16, seed: int = 0):
    """A faiss IVF-Flat index (inner product on unit rows = cosine) over ``unit``.

    IVF rather than HNSW: an HNSW graph of 1M 200-d vectors takes about half an hour to build on
    two cores, IVF a few minutes (k-means on a sample, then one assignment pass), with recall@10
    near 1 on clustered embeddings (BENCHMARKS.md). A query scans ``nprobe`` of ``nlist`` lists.
    """
    import faiss

    nlist = nlist or default_lists(len(unit))
    quantizer = faiss.IndexFlatIP(unit.shape[1])  # faiss keeps a reference to it in the index
    index = faiss.IndexIVFFlat(quantizer, unit.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10  # k-means rounds: the centroids only route queries, exactness comes from the scan
    sample = np.random.default_rng(seed).choice(len(unit), size=min(len(unit), 50 * nlist), replace=False)
    index.train(np.ascontiguousarray(unit[np.sort(sample)], np.float32))
    index.add(np.ascontiguousarray(unit, np.float32))
    index.nprobe = min(nprobe, nlist)
    return index


def recall_at_k(index, unit: np.ndarray, *, k: int = 10, n_queries: int = 1000, seed: int = 0) -> float:
    """Mean share of the exact top ``k`` (track itself excluded) that ``index`` finds, over sampled tracks."""
    rng = np.random.default_rng(seed)
    queries = rng.choice(len(unit), size=min(n_queries, len(unit)), replace=False)
    _, found = index.search(unit[queries], k + 1)
    hits = 0
    for query, row in zip(queries, found):
        exact, _ = exact_neighbours(unit, unit[query], k, exclude=int(query))
        hits += len(set(exact.tolist()) & (set(row.tolist()) - {int(query), -1}))
    return hits / (len(queries) * min(k, len(unit) - 1))


def write_index(tags_dir: str, *, nlist: int | None = None, nprobe: int = 16) -> dict:
    """Build the index of ``tags_dir``, write it under ``DIR/index/`` and return its info."""
    import faiss

    # DIR/index/ follows the rules of every output: it is replaced only when tagscale made it.
    folder = fileio.join(tags_dir.rstrip("/"), INDEX_DIR)
    folder = outputs.check_output(folder, entries=(INDEX_FILE, INDEX_INFO), flag="the index folder")
    table = tagdata.load(tags_dir)
    unit = tagdata.normalized(table.embeddings)
    index = build_index(unit, nlist=nlist, nprobe=nprobe)
    info = {
        "library": f"faiss {faiss.__version__}",
        "kind": "IndexIVFFlat, inner product on unit-length embeddings",
        "nlist": int(index.nlist),
        "nprobe": int(index.nprobe),
        "tracks": len(table.track_ids),
        "dim": int(unit.shape[1]),
        "model": table.model,
        "recall_at_10": round(recall_at_k(index, unit), 4),
        "files": _fingerprint(tags_dir),
    }
    from apache_beam.io.filesystems import FileSystems

    ownership.mark(folder)
    with FileSystems.create(fileio.join(folder, INDEX_FILE), compression_type="uncompressed") as handle:
        handle.write(faiss.serialize_index(index).tobytes())
    fileio.write_text(fileio.join(folder, INDEX_INFO), json.dumps(info, indent=2) + "\n")
    return info


def read_index(tags_dir: str, n_tracks: int):
    """The index of ``tags_dir`` when there is one for the current tag files, else None (and why)."""
    folder = fileio.join(tags_dir.rstrip("/"), INDEX_DIR)
    if not fileio.exists(fileio.join(folder, INDEX_INFO)):
        return None, None
    info = json.loads(fileio.read_text(fileio.join(folder, INDEX_INFO)))
    if info.get("files") != _fingerprint(tags_dir) or info.get("tracks") != n_tracks:
        return None, "the index is older than the tag output (run `tagscale index` again); searching exactly"
    import faiss
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(fileio.join(folder, INDEX_FILE), compression_type="uncompressed") as handle:
        index = faiss.deserialize_index(np.frombuffer(handle.read(), np.uint8))
    index.nprobe = int(info.get("nprobe", 16))
    return index, None


# ---------------------------------------------------------------------------- search


def _neighbours(table, unit, query, k, exclude, index):
    if index is None:
        return exact_neighbours(unit, query, k, exclude)
    query = (query / max(float(np.linalg.norm(query)), 1e-12)).astype(np.float32)[None, :]
    similarities, rows = index.search(query, k + 1)
    keep = [(row, sim) for row, sim in zip(rows[0], similarities[0]) if row >= 0 and row != exclude][:k]
    return np.array([row for row, _ in keep], np.int64), np.array([sim for _, sim in keep], np.float32)


def _results(table, rows, similarities, query_scores) -> list[dict]:
    return [
        {
            "track_id": table.track_ids[row],
            "similarity": round(float(sim), 6),
            "shared_tags": shared_tags(query_scores, table.scores[row], table.tags),
            "uri": table.uris[row],
        }
        for row, sim in zip(rows, similarities)
    ]


class Searcher:
    """A run's embeddings, and its index when one is fresh, loaded once for many queries.

    ``tagscale similar`` asks once; the explorer keeps one per run, so a Track page does not
    read every embedding of a large run again.
    """

    def __init__(self, tags_dir: str, *, use_index: bool = True):
        self.table = tagdata.load(tags_dir)
        self.unit = tagdata.normalized(self.table.embeddings)
        self.index, self.note = read_index(tags_dir, len(self.table.track_ids)) if use_index else (None, None)

    def by_track(self, track_id: str, k: int) -> list[dict]:
        """Neighbours of a track of the run, the track itself excluded."""
        row = self.table.row(track_id)
        rows, similarities = _neighbours(self.table, self.unit, self.table.embeddings[row], k, row, self.index)
        return _results(self.table, rows, similarities, self.table.scores[row])

    def by_vector(self, vector, vector_scores, k: int) -> list[dict]:
        """Neighbours of an outside embedding (``similar --audio``)."""
        if vector.shape != (self.unit.shape[1],):
            raise TagscaleError(f"the embedding has {vector.shape[0]} values, the run's have {self.unit.shape[1]}")
        rows, similarities = _neighbours(self.table, self.unit, vector, k, None, self.index)
        return _results(self.table, rows, similarities, vector_scores)


def search(
    tags_dir: str, *, track_id: str | None = None, vector=None, vector_scores=None, k: int = 10, use_index: bool = True
):
    """Neighbours of a track of the run (``track_id``) or of an outside embedding (``vector``).

    Returns the result list and a note (None, or why the index was not used).
    """
    if k < 1:
        raise TagscaleError(f"--k must be at least 1, got {k}")
    searcher = Searcher(tags_dir, use_index=use_index)
    if track_id is not None:
        return searcher.by_track(track_id, k), searcher.note
    return searcher.by_vector(vector, vector_scores, k), searcher.note


def similar_tracks(tags_dir: str, track_id: str, k: int = 10) -> list[dict]:
    """The ``k`` tracks most similar to ``track_id`` (cosine of embeddings), the track itself excluded.

    Returns
    -------
    list of dict
        ``{"track_id", "similarity", "shared_tags", "uri"}``, highest similarity first;
        ``shared_tags`` are the tags among both tracks' top five, in the query's order.

    Raises
    ------
    TagscaleError
        For an unknown ``track_id`` or a folder without tag output.
    """
    return search(tags_dir, track_id=track_id, k=k)[0]


def embed_file(path: str, model_dir: str, *, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode one audio file and run a serving model over it the way ``tagscale tag`` does.

    Returns the mean patch embedding, the mean scores (in the model's tag order) and the model info.
    """
    from model import dsp, export
    from pipelines import stages
    from pipelines.decode import audio

    try:
        samples = audio.decode_audio(path).samples
        stages.check_audio(samples, min_duration_s=stages.DecodeOptions.min_duration_s)
    except audio.DecodeError as error:
        raise TagscaleError(f"cannot use {path}: {error}") from error
    model = export.load_serving_model(model_dir)
    patches = dsp.patch_waveform(samples)
    embeddings, scores = [], []
    for start in range(0, len(patches), batch_size):
        batch = np.zeros((batch_size, dsp.PATCH_SAMPLES), np.float32)  # the tag pipeline's fixed batch shape
        chunk = patches[start : start + batch_size]
        batch[: len(chunk)] = chunk
        outputs = model.predict(batch)
        embeddings.append(outputs["embedding"][: len(chunk)])
        scores.append(outputs["scores"][: len(chunk)])
    info = dict(model.info, tags=model.tags)
    return np.concatenate(embeddings).mean(0), np.concatenate(scores).mean(0), info


def _audio_query(args) -> tuple[np.ndarray, np.ndarray]:
    """Embedding and vocabulary-ordered scores of ``--audio``, checked against the run's model."""
    from model import pretrained

    table = tagdata.load(args.tags)
    model_dir = pretrained.resolve_model(args.model or table.model["name"], args.cache_dir)
    vector, scores, info = embed_file(args.audio, model_dir)
    if info.get("version") != table.model["version"]:
        raise TagscaleError(
            f"model {info.get('name')} is version {info.get('version')}, the run was tagged by {table.model['name']} "
            f"version {table.model['version']}: pass --model with the run's model"
        )
    order = [info["tags"].index(tag) for tag in table.tags]
    return vector, scores[order]


def format_table(results: list[dict]) -> str:
    lines = [f"{'rank':>4}  {'track_id':<24} {'similarity':>10}  shared top tags"]
    for rank, item in enumerate(results, start=1):
        lines.append(
            f"{rank:>4}  {printable(item['track_id']):<24} {item['similarity']:>10.4f}  "
            f"{printable(', '.join(item['shared_tags'])) or '-'}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale similar",
        description="Tracks most similar to TRACK_ID (or to --audio FILE) by cosine similarity of embeddings. "
        "Reads only tag output; uses DIR/index/ (tagscale index) when it matches the tag files.",
    )
    parser.add_argument("--tags", required=True, help="a tag output folder (local or gs://)")
    parser.add_argument("track_id", nargs="?", help="a track of the run (excluded from its own results)")
    parser.add_argument(
        "--audio", help="an audio file instead of TRACK_ID: embedded with the run's model, then searched"
    )
    parser.add_argument(
        "--model", help="with --audio: the run's model (pretrained name or directory; default the run's model name)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="pretrained model cache (default $TAGSCALE_CACHE or ~/.cache/tagscale)"
    )
    parser.add_argument("--k", type=int, default=10, help="number of neighbours (%(default)s)")
    parser.add_argument("--exact", action="store_true", help="search exactly even when an index exists")
    parser.add_argument(
        "--json", action="store_true", help="print a JSON list of {track_id, similarity, shared_tags, uri}"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.track_id is None) == (args.audio is None):
        raise TagscaleError("give either TRACK_ID or --audio FILE")
    if args.audio:
        vector, scores = _audio_query(args)
        results, note = search(args.tags, vector=vector, vector_scores=scores, k=args.k, use_index=not args.exact)
    else:
        results, note = search(args.tags, track_id=args.track_id, k=args.k, use_index=not args.exact)
    if note:
        print(f"tagscale similar: {note}", file=sys.stderr)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0


def index_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tagscale index",
        description="Build an approximate nearest-neighbour index (faiss IVF-Flat) of a run's embeddings in DIR/index/ "
        "and report its recall@10 against exact search; `tagscale similar` then uses it.",
    )
    parser.add_argument("--tags", required=True, help="a tag output folder (local or gs://)")
    parser.add_argument("--nlist", type=int, default=None, help="inverted lists (default about 4 sqrt(tracks))")
    parser.add_argument(
        "--nprobe", type=int, default=16, help="lists a query scans (%(default)s): more = better recall, slower queries"
    )
    args = parser.parse_args(argv)
    info = write_index(args.tags, nlist=args.nlist, nprobe=args.nprobe)
    print(
        f"indexed {info['tracks']} tracks ({info['dim']}-d, "
        f"{info['library']} IVF-Flat nlist={info['nlist']} nprobe={info['nprobe']}): "
        f"recall@10 vs exact search = {info['recall_at_10']:.4f} -> {fileio.join(args.tags.rstrip('/'), INDEX_DIR)}/"
    )
    return 0


if __name__ == "__main__":
    from runtime.errors import run_command

    sys.exit(run_command("similar", main))
