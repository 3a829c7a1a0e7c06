"""query: DuckDB over the tag Parquet files (those ``DIR/tags/manifest.json`` lists).

    tagscale query --tags DIR top TAG [--limit N] [--thresholds THRESHOLDS]
    tagscale query --tags DIR track TRACK_ID [--limit N]
    tagscale query --tags DIR stats
    tagscale query --tags DIR sql "SELECT ... FROM tags ..." [--thresholds THRESHOLDS] [--allow-files]
    tagscale query --tags DIR when TRACK_ID TAG [--threshold X | --thresholds THRESHOLDS]

Every query runs over a view named ``tags`` (one row per track, the schema of
:data:`runfolder.schema.TAGS_SCHEMA`) and a view ``tag_scores`` (one row per track and tag:
track_id, uri, model, tag, score). With ``--thresholds`` (a file of ``tagscale calibrate``)
there is also a view ``decided``: one row per track, one boolean column per calibrated tag
(score at or above the tag's threshold). A run tagged with ``--segments`` also has a view
``segments``: one row per patch, track_id, start_s, end_s and one score column per tag
(:mod:`runfolder.segments`). Output is a table, or JSON with ``--json``.
DIR may be local or gs://. A statement reads the run and nothing else unless ``--allow-files``.
"""

from __future__ import annotations

import argparse
import json
import sys

from runfolder import provenance, reader, segments
from runtime.errors import TagscaleError
from runtime.terminal import printable

# Over ``tags``, the run's Arrow data that :func:`connect` registers (no file name in any SQL).
TAG_SCORES_VIEW = """
CREATE VIEW tag_scores AS
  SELECT track_id, uri, model.name AS model, s.tag AS tag, s.score::DOUBLE AS score
  FROM (SELECT track_id, uri, model, unnest(scores) AS s FROM tags);
"""
# Above this many scores (tracks x tags), stats estimates its quantiles: 4M exact ones hold 32 MB.
EXACT_QUANTILE_SCORES = 2**22
# What a locked connection refuses, said where the refusal is reported.
LOCKED_HINT = "reading or writing files, ATTACH and extensions need --allow-files"


def decided_view(thresholds: dict[str, float]) -> str:
    """SQL of the ``decided`` view: per track, one boolean per tag, score >= the tag's threshold.

    Scores are stored as float32; comparing in float32 keeps a threshold such as 0.7 from
    missing a score stored as 0.7 (0.69999999 once widened to a double)."""

    def quote(text: str, mark: str) -> str:
        return mark + text.replace(mark, mark * 2) + mark

    columns = "".join(
        f",\n  coalesce(bool_or(tag = {quote(tag, chr(39))} AND score::FLOAT >= '{float(threshold)!r}'::FLOAT), false) "
        f"AS {quote(tag, chr(34))}"
        for tag, threshold in sorted(thresholds.items())
    )
    return f"CREATE VIEW decided AS SELECT track_id, any_value(uri) AS uri{columns}\nFROM tag_scores GROUP BY track_id;"


def connect(
    tags_dir: str, thresholds: dict[str, float] | None = None, *, allow_files: bool = False, segments_view: bool = True
):
    """A DuckDB connection with the ``tags`` and ``tag_scores`` views over ``tags_dir``,
    ``decided`` when ``thresholds`` (tag -> threshold) are given, and ``segments`` when the run
    has a segments table and ``segments_view``.

    DuckDB never opens the run's files itself: the run's one reader
    (:class:`runfolder.reader.TagRun`, by its rule) registers them as pyarrow datasets, read
    through pyarrow's filesystems (local or gs://) as queries scan them, so no file name is ever
    written into SQL and DuckDB needs no extension for gs://. Unless ``allow_files`` the
    connection opens no file at all: no other file, no COPY ... TO (not even over the run's
    own files), no ATTACH, URL or extension install or load, with the settings locked so that
    a statement cannot switch them back.
    """
    import duckdb

    run = reader.TagRun(tags_dir)
    segment_data = run.segment_dataset() if segments_view else None
    config = {} if allow_files else {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    connection = duckdb.connect(config=config)
    try:
        # No progress bar: DuckDB draws it on stdout, into the table or JSON a long query prints.
        connection.execute("SET enable_progress_bar = false")
        run.register(connection, "tags")
        connection.execute(TAG_SCORES_VIEW)
        if segment_data is not None:
            connection.register("segment_rows", segment_data)
            connection.execute(segments.view_sql(segments.vocabulary(segment_data.schema) or []))
        if thresholds:
            connection.execute(decided_view(thresholds))
        if not allow_files:
            connection.execute("SET enable_external_access = false")
            connection.execute("SET lock_configuration = true")  # last: no statement can undo the above
    except duckdb.Error as error:
        connection.close()
        raise TagscaleError(f"cannot query the tag output in {tags_dir}: {str(error).splitlines()[0]}") from error
    return connection


def top(connection, tag: str, limit: int = 10, threshold: float | None = None):
    """Tracks with the highest score for ``tag``; with ``threshold``, only those scoring at or above it."""
    known = connection.execute("SELECT count(*) FROM tag_scores WHERE tag = ?", [tag]).fetchone()[0]
    if not known:
        vocabulary = [
            row[0] for row in connection.execute("SELECT DISTINCT tag FROM tag_scores ORDER BY tag").fetchall()
        ]
        raise TagscaleError(f"unknown tag {tag!r}; the tags are: {', '.join(vocabulary)}")
    return connection.execute(
        "SELECT track_id, uri, model, round(score, 4) AS score FROM tag_scores "
        "WHERE tag = ? AND score::FLOAT >= ?::FLOAT "
        "ORDER BY score DESC, track_id LIMIT ?",
        [tag, float("-inf") if threshold is None else threshold, limit],
    )


def track(connection, track_id: str, limit: int = 10):
    if not connection.execute("SELECT count(*) FROM tags WHERE track_id = ?", [track_id]).fetchone()[0]:
        raise TagscaleError(f"unknown track {track_id!r}: not in the tag output")
    return connection.execute(
        "SELECT tag, round(score, 4) AS score, model FROM tag_scores "
        "WHERE track_id = ? ORDER BY score DESC, tag LIMIT ?",
        [track_id, limit],
    )


def stats(connection):
    """Per tag: tracks above 0.5, tracks, and the scores' min, p10, median, p90 and max.

    The quantiles are exact (``quantile_cont``) while the run has at most
    :data:`EXACT_QUANTILE_SCORES` scores: an exact quantile holds every score in memory. Above
    that they are t-digest estimates (``approx_quantile``), so memory stays bounded at any size.
    """
    tracks, width = connection.execute("SELECT count(*), max(len(scores)) FROM (FROM tags LIMIT 1)").fetchone()
    if width:
        tracks = connection.execute("SELECT count(*) FROM tags").fetchone()[0]
    quantile = "quantile_cont" if tracks * (width or 0) <= EXACT_QUANTILE_SCORES else "approx_quantile"
    return connection.execute(
        f"""
        SELECT tag, count(*) FILTER (WHERE score > 0.5) AS tracks_above_0_5, count(*) AS tracks,
               round(min(score), 4) AS min, round({quantile}(score, 0.1), 4) AS p10,
               round({quantile}(score, 0.5), 4) AS median, round({quantile}(score, 0.9), 4) AS p90,
               round(max(score), 4) AS max
        FROM tag_scores GROUP BY tag ORDER BY tracks_above_0_5 DESC, median DESC, tag
        """
    )


def when(connection, track_id: str, tag: str, threshold: float) -> dict:
    """The time ranges of ``track_id`` where ``tag`` scores at or above ``threshold``, patches
    merged where they touch: ``{"track_id", "tag", "threshold", "ranges": [{"start_s", "end_s", "max_score"}]}``.

    Raises
    ------
    TagscaleError
        The run has no segments table, or the track or the tag is not in it.
    """
    tables = {row[0] for row in connection.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "segments" not in tables:
        raise TagscaleError("this run has no segments table: tag it with `tagscale tag --segments`")
    columns = [row[0] for row in connection.execute("DESCRIBE segments").fetchall()][3:]
    if tag not in columns:
        raise TagscaleError(f"unknown tag {tag!r}; the tags are: {', '.join(columns)}")
    quoted = '"' + tag.replace('"', '""') + '"'
    rows = connection.execute(
        f"SELECT start_s, end_s, {quoted} FROM segments WHERE track_id = ? ORDER BY start_s", [track_id]
    ).fetchall()
    if not rows:
        raise TagscaleError(f"unknown track {track_id!r}: not in the segments table")
    return {"track_id": track_id, "tag": tag, "threshold": threshold, "ranges": segments.ranges(rows, threshold)}


def sql(connection, statement: str):
    import duckdb

    try:
        return connection.execute(statement)
    except duckdb.Error as error:
        message = str(error).splitlines()[0]
        if isinstance(error, duckdb.PermissionException) or "configuration has been locked" in message:
            message += f" ({LOCKED_HINT})"
        raise TagscaleError(f"SQL failed: {message}") from error


def format_table(columns: list[str], rows: list[tuple]) -> str:
    """A plain aligned text table (readable in a terminal and in logs); control characters escaped."""
    cells = [[printable(str(column)) for column in columns]]
    cells += [["" if v is None else printable(str(v)) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale query", description="DuckDB queries over tag output (DIR/tags/*.parquet)."
    )
    parser.add_argument("--tags", required=True, help="the --output directory of `tagscale tag` (local or gs://)")
    parser.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    commands = parser.add_subparsers(dest="query", required=True)
    top_parser = commands.add_parser("top", help="tracks with the highest score for TAG")
    top_parser.add_argument("tag")
    top_parser.add_argument("--limit", type=int, default=10)
    top_parser.add_argument(
        "--thresholds", help="a `tagscale calibrate` file: keep only tracks at or above TAG's threshold"
    )
    track_parser = commands.add_parser("track", help="a track's top tags with scores")
    track_parser.add_argument("track_id")
    track_parser.add_argument("--limit", type=int, default=10)
    commands.add_parser(
        "stats", help="per tag: tracks scoring above 0.5 and score quantiles; then the run's model, licence, catalog"
    )
    sql_parser = commands.add_parser(
        "sql",
        help="any SQL over the views `tags` and `tag_scores`; it reads only the run "
        "(no other file, COPY ... TO, ATTACH or extension) unless --allow-files",
    )
    when_parser = commands.add_parser(
        "when", help="the time ranges of TRACK_ID where TAG scores at or above a threshold (needs tag --segments)"
    )
    when_parser.add_argument("track_id")
    when_parser.add_argument("tag")
    choice = when_parser.add_mutually_exclusive_group()
    choice.add_argument("--threshold", type=float, default=None, help="the score to reach (default 0.5)")
    choice.add_argument("--thresholds", help="a `tagscale calibrate` file: TAG's calibrated threshold")
    sql_parser.add_argument("statement")
    sql_parser.add_argument(
        "--thresholds", help="a `tagscale calibrate` file: adds the view `decided` (one boolean per tag)"
    )
    sql_parser.add_argument(
        "--allow-files",
        action="store_true",
        help="let the statement read and write any file, attach databases and install or load "
        "DuckDB extensions (network): DuckDB's defaults, for a statement you trust",
    )
    for sub in commands.choices.values():  # --json before or after the query's name
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    import duckdb

    from tagruns.calibrate import load_thresholds, parse_threshold

    args = build_parser().parse_args(argv)
    thresholds = None
    if getattr(args, "threshold", None) is not None:
        args.threshold = parse_threshold(args.threshold, args.tag, "--threshold")
    if getattr(args, "thresholds", None):
        thresholds = load_thresholds(args.thresholds)
    connection = connect(
        args.tags,
        thresholds,
        allow_files=getattr(args, "allow_files", False),
        segments_view=args.query in ("when", "sql"),
    )
    if args.query == "when":
        return _when(args, connection, thresholds)
    try:
        columns, rows = _run(args, connection, thresholds)
    except duckdb.Error as error:  # a file of the run unreadable, or gone since it was listed
        raise TagscaleError(f"query failed: {str(error).splitlines()[0]}") from error
    # stats also says where the scores came from, for runs that recorded it: after the table,
    # and in JSON on every row (the output stays a list of per-tag records).
    origin = provenance.read(args.tags) if args.query == "stats" else None
    if args.json:
        records = [dict(zip(columns, row)) for row in rows]
        if origin is not None:
            records = [{**record, "provenance": origin} for record in records]
        print(json.dumps(records, indent=2, default=str))
    else:
        print(format_table(columns, rows))
        if origin is not None:
            print("\n" + "\n".join(printable(line) for line in provenance.describe(origin)))
    return 0


def _when(args: argparse.Namespace, connection, thresholds: dict[str, float] | None) -> int:
    threshold = 0.5 if args.threshold is None else args.threshold
    if thresholds is not None:
        if args.tag not in thresholds:
            raise TagscaleError(f"{args.thresholds} has no threshold for {args.tag!r}")
        threshold = thresholds[args.tag]
    found = when(connection, args.track_id, args.tag, threshold)
    if args.json:
        print(json.dumps(found, indent=2))
    elif found["ranges"]:
        print(segments.format_ranges(found["ranges"]))
    else:
        print(f"{printable(args.tag)} is below {threshold} all through {printable(args.track_id)}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace, connection, thresholds: dict[str, float] | None) -> tuple[list[str], list[tuple]]:
    if args.query == "top":
        if thresholds is not None and args.tag not in thresholds:
            raise TagscaleError(
                f"{args.thresholds} has no threshold for {args.tag!r} "
                f"(calibrated: {', '.join(sorted(thresholds)) or 'none'})"
            )
        result = top(connection, args.tag, args.limit, None if thresholds is None else thresholds[args.tag])
    elif args.query == "track":
        result = track(connection, args.track_id, args.limit)
    elif args.query == "stats":
        result = stats(connection)
    else:
        result = sql(connection, args.statement)
    return [description[0] for description in result.description], result.fetchall()


if __name__ == "__main__":
    from runtime.errors import run_command

    sys.exit(run_command("query", main))
