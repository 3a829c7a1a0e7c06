"""diff: what changed between two tag runs (a new model, a re-encoded catalog, new settings).

    tagscale diff --tags A --tags B --output DIR [--tolerance 1e-6]

Over the tracks in both runs: per tag (of both vocabularies) the mean score shift (B - A) and
the Spearman rank correlation of the scores, the tracks whose top-3 tags changed (as a set:
an order swap within the top 3 is not a change), and per track the cosine shift of the
embedding (1 - cosine). Writes DIR/report.md and DIR/drift.png. Exit status: 0 when nothing
changed beyond the tolerance (and it says so), 1 when something did, as diff(1) does. Reads
only tag output.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from pipelines.storage import outputs, ownership
from runtime.errors import TagscaleError
from tagruns import tagdata

TOP = 3
REPORT_FILES = ("report.md", "drift.png")


def compare(a: tagdata.TagTable, b: tagdata.TagTable, *, tolerance: float = 1e-6) -> dict:
    """Drift between two runs, over their common tracks and common tags."""
    from scipy.stats import spearmanr

    rows_b = {track_id: index for index, track_id in enumerate(b.track_ids)}
    common = [track_id for track_id in a.track_ids if track_id in rows_b]
    if not common:
        raise TagscaleError("the two runs have no track in common")
    ia = np.array([a.row(t) for t in common])
    ib = np.array([rows_b[t] for t in common])
    tags = sorted(set(a.tags) & set(b.tags))
    ca = [a.tags.index(t) for t in tags]
    cb = [b.tags.index(t) for t in tags]
    sa, sb = a.scores[ia][:, ca].astype(np.float64), b.scores[ib][:, cb].astype(np.float64)
    per_tag = []
    for j, tag in enumerate(tags):
        same = np.allclose(sa[:, j], sb[:, j], rtol=0, atol=tolerance)
        rho = 1.0 if same else spearmanr(sa[:, j], sb[:, j]).statistic
        per_tag.append(
            {
                "tag": tag,
                "mean_a": sa[:, j].mean(),
                "mean_b": sb[:, j].mean(),
                "shift": sb[:, j].mean() - sa[:, j].mean(),
                "spearman": float(rho) if np.isfinite(rho) else float("nan"),
                "max_abs_change": float(np.abs(sb[:, j] - sa[:, j]).max()),
            }
        )
    top_a = [set(a.tags[k] for k in np.argsort(-a.scores[i], kind="stable")[:TOP]) for i in ia]
    top_b = [set(b.tags[k] for k in np.argsort(-b.scores[i], kind="stable")[:TOP]) for i in ib]
    top_changed = [
        {"track_id": t, "top_a": sorted(x), "top_b": sorted(y)} for t, x, y in zip(common, top_a, top_b) if x != y
    ]
    if a.embeddings.shape[1] == b.embeddings.shape[1]:
        ua, ub = tagdata.normalized(a.embeddings[ia]), tagdata.normalized(b.embeddings[ib])
        cosine_shift = np.clip(1.0 - np.sum(ua.astype(np.float64) * ub, axis=1), 0.0, 2.0)
    else:
        cosine_shift = None
    max_score_change = max((entry["max_abs_change"] for entry in per_tag), default=0.0)
    changed = (
        max_score_change > tolerance
        or bool(top_changed)
        or cosine_shift is None
        or float(cosine_shift.max()) > tolerance
        or len(common) != len(a.track_ids)
        or len(common) != len(b.track_ids)
        or set(a.tags) != set(b.tags)
    )
    return {
        "a": {"model": a.model, "tracks": len(a.track_ids), "tags": len(a.tags)},
        "b": {"model": b.model, "tracks": len(b.track_ids), "tags": len(b.tags)},
        "common_tracks": common,
        "only_a": len(a.track_ids) - len(common),
        "only_b": len(b.track_ids) - len(common),
        "common_tags": tags,
        "tags_only_a": sorted(set(a.tags) - set(b.tags)),
        "tags_only_b": sorted(set(b.tags) - set(a.tags)),
        "per_tag": per_tag,
        "top_changed": top_changed,
        "cosine_shift": cosine_shift,
        "max_score_change": max_score_change,
        "changed": changed,
    }


def _model(run: dict) -> str:
    return f"{run['model']['name']} {run['model']['version']}"


def render_report(result: dict, a_dir: str, b_dir: str, png_name: str, *, limit: int = 20) -> str:
    """report.md of a comparison."""
    lines = [
        "# Tag drift report",
        "",
        f"- A: `{a_dir}` ({_model(result['a'])}, {result['a']['tracks']} tracks, {result['a']['tags']} tags)",
        f"- B: `{b_dir}` ({_model(result['b'])}, {result['b']['tracks']} tracks, {result['b']['tags']} tags)",
        f"- tracks in both: {len(result['common_tracks'])}; only in A: {result['only_a']}; "
        f"only in B: {result['only_b']}",
        f"- tags in both: {len(result['common_tags'])}; "
        f"only in A: {', '.join(result['tags_only_a']) or 'none'}; "
        f"only in B: {', '.join(result['tags_only_b']) or 'none'}",
        "",
    ]
    if not result["changed"]:
        lines += ["**No change**: every common track has the same scores, top-3 tags and embedding in both runs.", ""]
        return "\n".join(lines)
    shifts = result["cosine_shift"]
    lines += [
        f"Largest score change of any track and tag: {result['max_score_change']:.4g}. "
        f"Tracks whose top-3 tags changed: {len(result['top_changed'])} of {len(result['common_tracks'])}.",
        "",
        f"![drift]({png_name})",
        "",
        "## Per tag (largest mean shift first)",
        "",
        "| tag | mean A | mean B | shift B-A | Spearman | largest change |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for entry in sorted(result["per_tag"], key=lambda e: -abs(e["shift"])):
        lines.append(
            f"| {entry['tag']} | {entry['mean_a']:.4f} | {entry['mean_b']:.4f} | {entry['shift']:+.4f} | "
            f"{entry['spearman']:.3f} | {entry['max_abs_change']:.4f} |"
        )
    lines += ["", f"## Tracks whose top-{TOP} tags changed ({len(result['top_changed'])})", ""]
    if result["top_changed"]:
        lines += [f"| track | top-{TOP} in A | top-{TOP} in B |", "|---|---|---|"]
        lines += [
            f"| {c['track_id']} | {', '.join(c['top_a'])} | {', '.join(c['top_b'])} |"
            for c in result["top_changed"][:limit]
        ]
        if len(result["top_changed"]) > limit:
            lines.append(f"| ... {len(result['top_changed']) - limit} more | | |")
    lines += ["", "## Embedding cosine shift per track (1 - cosine)", ""]
    if shifts is None:
        lines.append("Not comparable: the runs' embeddings have different dimensions.")
    else:
        lines.append(
            f"median {np.median(shifts):.4g}, 90th percentile {np.quantile(shifts, 0.9):.4g}, max {shifts.max():.4g}"
        )
        lines += ["", "| track | cosine shift |", "|---|---:|"]
        for i in np.argsort(-shifts, kind="stable")[:10]:
            lines.append(f"| {result['common_tracks'][i]} | {shifts[i]:.4g} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> None:
    """drift.png: per-tag mean shift, and the histogram of embedding cosine shifts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = sorted(result["per_tag"], key=lambda e: -abs(e["shift"]))[:25]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5))
    left.barh([e["tag"] for e in entries][::-1], [e["shift"] for e in entries][::-1], color="tab:blue")
    left.set_xlabel("mean score shift, B - A")
    left.set_title(f"largest per-tag shifts ({len(entries)} of {len(result['per_tag'])} tags)")
    left.axvline(0, color="black", linewidth=0.8)
    if result["cosine_shift"] is not None:
        right.hist(result["cosine_shift"], bins=40, color="tab:orange")
    right.set_xlabel("embedding cosine shift per track (1 - cosine)")
    right.set_ylabel("tracks")
    right.set_title(f"{len(result['common_tracks'])} tracks in both runs")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale diff",
        description="Compare two tag runs over their common tracks; write OUTPUT/report.md and OUTPUT/drift.png. "
        "Exit 0 when nothing changed, 1 when something did.",
    )
    parser.add_argument(
        "--tags", action="append", required=True, help="a tag output folder; give it twice: --tags A --tags B"
    )
    parser.add_argument(
        "--output",
        required=True,
        help=f"report folder (local): {outputs.RULES}",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-6,
        help="score and cosine changes up to this count as no change (%(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if len(args.tags) != 2:
        raise TagscaleError(f"give --tags exactly twice (A and B), got {len(args.tags)}")
    if "://" in args.output and not args.output.startswith("file://"):
        raise TagscaleError("--output is a local folder (the report is for reading)")
    # The rules of every output (no root, nothing tagscale did not write), checked before the runs are read.
    output = outputs.check_output(args.output, entries=REPORT_FILES, inputs=tuple(args.tags))
    result = compare(tagdata.load(args.tags[0]), tagdata.load(args.tags[1]), tolerance=args.tolerance)
    ownership.mark(output)
    plot(result, os.path.join(output, "drift.png"))
    with open(os.path.join(output, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(render_report(result, args.tags[0], args.tags[1], "drift.png"))
    common = len(result["common_tracks"])
    if not result["changed"]:
        print(
            f"no change: {common} tracks and {len(result['common_tags'])} tags identical in both runs "
            f"-> {output}/report.md"
        )
        return 0
    shifts = result["cosine_shift"]
    biggest = max(result["per_tag"], key=lambda e: abs(e["shift"]), default=None)
    print(
        f"changed: {common} tracks in both runs ({result['only_a']} only in A, {result['only_b']} only in B); "
        f"top-{TOP} tags changed for {len(result['top_changed'])}; "
        + (f"largest mean shift {biggest['tag']} {biggest['shift']:+.4f}; " if biggest else "")
        + (
            f"median embedding cosine shift {np.median(shifts):.4g}"
            if shifts is not None
            else "embeddings not comparable"
        )
        + f" -> {output}/report.md, drift.png"
    )
    return 1


if __name__ == "__main__":
    from runtime.errors import run_command

    sys.exit(run_command("diff", main))
