"""``tagscale pretrained list|fetch``: the command over :mod:`model.pretrained`.

``list`` prints each pretrained model with its licence, source and where it is fetched to (a
table, or ``--json``); ``fetch`` downloads the musicnn wheel with pip and converts its models.
"""

from __future__ import annotations

import argparse
import json
import sys

from model import pretrained
from runtime.errors import run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale pretrained",
        description=f"List or fetch the pretrained musicnn models ({pretrained.SOURCE}).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "list", help="show the available models, where the fetched ones are, their licence and source"
    )
    show.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    get = actions.add_parser("fetch", help=f"download {pretrained.WHEEL_REQUIREMENT} with pip and convert its models")
    get.add_argument(
        "names", nargs="*", metavar="NAME", help=f"models to fetch (default: all of {', '.join(pretrained.MODELS)})"
    )
    get.add_argument("--force", action="store_true", help="convert again even when already fetched")
    for sub in (show, get):
        sub.add_argument(
            "--cache-dir",
            default=None,
            help=f"cache directory (default: ${pretrained.CACHE_ENV} or ~/.cache/tagscale)",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "fetch":
        for name, path in pretrained.fetch(args.names, args.cache_dir, force=args.force).items():
            print(f"{name}\t{path}")
        return 0
    rows = pretrained.list_models(args.cache_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    dataset_width = max(len(row["dataset"]) for row in rows)
    path_width = max(len(row["path"] or "not fetched") for row in rows)
    # The first four columns as they always were (scripts read them); the terms after them,
    # the source last as it holds spaces.
    print(
        f"{'NAME':<{width}}  {'DATASET':<{dataset_width}}  TAGS  {'PATH':<{path_width}}  "
        f"LICENSE  COMMERCIAL  {'SHA256':<64}  SOURCE"
    )
    for row in rows:
        path = row["path"] or "not fetched"
        commercial = {True: "yes", False: "no"}.get(row["commercial"], "unknown")
        print(
            f"{row['name']:<{width}}  {row['dataset']:<{dataset_width}}  {row['tags']:>4}  {path:<{path_width}}  "
            f"{row['license']:<7}  {commercial:<10}  {row['sha256']:<64}  {row['source']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_command("pretrained", main))
