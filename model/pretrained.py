"""Pretrained musicnn models (MTT, MSD) as tagscale serving models (the command that lists and
fetches them, ``tagscale pretrained list|fetch``, is :mod:`infra.pretrained`).

``fetch`` downloads the ``musicnn==0.1.0`` wheel with pip (it is never installed: it pins
TF 1-era numpy), unpacks it into the cache, reads the ``MTT_musicnn`` and ``MSD_musicnn``
TF 1 checkpoints, copies every weight into the Keras ``musicnn`` preset of
:mod:`model.network` and saves ready-to-serve models under ``<cache>/models/<name>/`` with
:func:`model.export.save_serving_model`.

How tagging differs from musicnn's own ``extractor.py`` (and why):

- musicnn cuts the log-mel of the whole track into non-overlapping 187-frame patches and
  drops the incomplete last one; :func:`model.dsp.patch_waveform` yields the same patches
  (``n_frames // 187`` of them). A track shorter than 187 frames (about 2.98 s) makes
  musicnn's ``batch_data`` fail (its patch loop never runs); tagscale tags one zero-padded
  patch instead.
- musicnn casts the mel spectrogram to float16 before ``log10(10000 * x + 1)``, which
  overflows on loud audio; tagscale computes in float32.
- A track's tags are the mean of its patch sigmoid outputs, as musicnn's ``top_tags``.

The cache is ``--cache-dir``, else ``$TAGSCALE_CACHE``, else ``~/.cache/tagscale``.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

from model import export
from model.musicnn_checkpoint import CheckpointMappingError, load_musicnn_weights
from runtime.errors import TagscaleError

WHEEL_REQUIREMENT = "musicnn==0.1.0"
WHEEL_FILE = "musicnn-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
SOURCE = "musicnn 0.1.0 (ISC licence)"
# Where the weights come from and on what terms: the wheel's own metadata says ``License: ISC``
# (a permissive licence: commercial use allowed); the hash above pins the exact file.
LICENSE = "ISC"
WEIGHTS_SOURCE = f"{WHEEL_FILE} from PyPI ({WHEEL_REQUIREMENT}; github.com/jordipons/musicnn)"
TRAINED_LICENSE = "as the training data allows"
CACHE_ENV = "TAGSCALE_CACHE"
PIP_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """One pretrained model of the musicnn wheel."""

    name: str
    checkpoint: str  # folder in the wheel's musicnn/ package, also the checkpoint prefix
    labels: str  # list name in musicnn/configuration.py
    dataset: str
    n_tags: int = 50


MODELS = {
    spec.name: spec
    for spec in (
        Pretrained("musicnn-mtt", "MTT_musicnn", "MTT_LABELS", "MagnaTagATune"),
        Pretrained("musicnn-msd", "MSD_musicnn", "MSD_LABELS", "Million Song Dataset"),
    )
}

# -----------------------------------------------------------------------------
# cache and wheel


def cache_root(cache_dir: str | None = None) -> str:
    """``cache_dir``, else ``$TAGSCALE_CACHE``, else ``~/.cache/tagscale``."""
    root = cache_dir or os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "tagscale")
    return os.path.abspath(os.path.expanduser(root))


def model_dir(name: str, cache_dir: str | None = None) -> str:
    """Where the pretrained model ``name`` lives in the cache (fetched or not)."""
    return os.path.join(cache_root(cache_dir), "models", name)


def fetched_info(path: str) -> dict | None:
    """The info dict of a complete serving model at ``path``, or None."""
    if export.missing_files(path):
        return None
    try:
        with open(os.path.join(path, export.INFO_FILE)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def is_current(info: dict | None) -> bool:
    """True for a fetched model whose graph is the one this code would write (the fast CPU form);
    an older conversion still serves the same scores, only slower, and is converted again."""
    return info is not None and info.get("serving_graph") == export.FAST_GRAPH


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(cache_dir: str | None = None) -> str:
    """Download the musicnn wheel with ``pip download`` (once) and return its path.

    Raises
    ------
    TagscaleError
        One line naming what failed, when pip cannot get the wheel (no network, no index)
        or the file is not the expected one.
    """
    wheels = os.path.join(cache_root(cache_dir), "wheels")
    wheel = os.path.join(wheels, WHEEL_FILE)
    if os.path.exists(wheel) and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    os.makedirs(wheels, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "--retries", "2",
        "-d", wheels, WHEEL_REQUIREMENT,
    ]  # fmt: skip
    try:
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TagscaleError(f"pip download {WHEEL_REQUIREMENT} timed out after {PIP_TIMEOUT_S} s") from None
    except OSError as error:
        raise TagscaleError(f"could not run pip to download {WHEEL_REQUIREMENT}: {error}") from None
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines or [f"exit {result.returncode}"]
        raise TagscaleError(
            f"could not download {WHEEL_REQUIREMENT} with pip (is the package index reachable?): {errors[-1]}"
        )
    if not os.path.exists(wheel):
        raise TagscaleError(f"pip download {WHEEL_REQUIREMENT} succeeded but {wheel} is missing")
    if _sha256(wheel) != WHEEL_SHA256:
        raise TagscaleError(f"{wheel} does not have the expected SHA-256 {WHEEL_SHA256}; delete it and fetch again")
    return wheel


def unpack_wheel(wheel: str, cache_dir: str | None = None) -> str:
    """Unpack the wheel's ``musicnn/`` package (code is read, never imported); return the package dir."""
    target = os.path.join(cache_root(cache_dir), "musicnn-0.1.0")
    package = os.path.join(target, "musicnn")
    if os.path.exists(os.path.join(target, ".complete")):
        return package
    staging = _staging_dir(target)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            parts = member.split("/")
            if member.endswith("/") or parts[0] not in ("musicnn", "musicnn-0.1.0.dist-info") or ".." in parts:
                continue
            archive.extract(member, staging)
    open(os.path.join(staging, ".complete"), "w").close()
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return package


def _staging_dir(target: str) -> str:
    """A fresh sibling of ``target`` to build in, renamed onto ``target`` when complete."""
    staging = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    return staging


def read_labels(configuration_py: str, list_name: str) -> list[str]:
    """The tag list ``list_name`` of musicnn's ``configuration.py``, parsed with ``ast`` (not imported)."""
    with open(configuration_py) as handle:
        tree = ast.parse(handle.read(), filename=configuration_py)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == list_name for t in node.targets):
            labels = ast.literal_eval(node.value)
            if isinstance(labels, list) and all(isinstance(label, str) for label in labels):
                return labels
    raise CheckpointMappingError(f"{configuration_py} has no list of strings named {list_name}")


# -----------------------------------------------------------------------------
# checkpoint -> Keras


def checkpoint_prefix(package_dir: str, spec: Pretrained) -> str:
    """The checkpoint prefix: the model folder itself, files ``.index``, ``.data-*``, ``.meta``."""
    return os.path.join(package_dir, spec.checkpoint) + os.sep


def build_musicnn_model(package_dir: str, spec: Pretrained):
    """The Keras ``musicnn`` preset with the weights of ``spec``'s checkpoint; returns (model, tags)."""
    from model import network

    tags = read_labels(os.path.join(package_dir, "configuration.py"), spec.labels)
    keras_model = network.build_model("spectrogram", len(tags), preset="musicnn")
    load_musicnn_weights(keras_model, checkpoint_prefix(package_dir, spec))
    return keras_model, tags


def convert(spec: Pretrained, package_dir: str, export_dir: str) -> dict:
    """Build, load and save one pretrained model as a serving model at ``export_dir``."""
    from model import serving

    keras_model, tags = build_musicnn_model(package_dir, spec)
    module = serving.build_serving_module(keras_model, "spectrogram")
    staging = _staging_dir(export_dir)
    try:
        info = export.save_serving_model(
            module,
            staging,
            tags=tags,
            info={
                "name": spec.name,
                "frontend": "spectrogram",
                "preset": "musicnn",
                "source": SOURCE,
                "dataset": spec.dataset,
                "checkpoint": spec.checkpoint,
            },
        )
        shutil.rmtree(export_dir, ignore_errors=True)
        os.replace(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def fetch(names=None, cache_dir: str | None = None, *, force: bool = False) -> dict[str, str]:
    """Fetch the pretrained models ``names`` (default: all); return ``{name: directory}``.

    Already fetched models are kept unless ``force``.
    """
    names = list(names or MODELS)
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise TagscaleError(f"unknown pretrained model {unknown[0]!r}; available: {', '.join(MODELS)}")
    todo = [name for name in names if force or not is_current(fetched_info(model_dir(name, cache_dir)))]
    try:
        if todo:
            package = unpack_wheel(download_wheel(cache_dir), cache_dir)
            for name in todo:
                convert(MODELS[name], package, model_dir(name, cache_dir))
    except OSError as error:
        raise TagscaleError(f"cannot write to the model cache {cache_root(cache_dir)}: {error}") from error
    return {name: model_dir(name, cache_dir) for name in names}


def resolve_model(name_or_path: str, cache_dir: str | None = None) -> str:
    """The serving-model directory for a pretrained name or a model directory.

    Raises
    ------
    TagscaleError
        For a pretrained name that is not fetched, or a value that is neither.
    """
    if name_or_path in MODELS:
        path = model_dir(name_or_path, cache_dir)
        info = fetched_info(path)
        if info is None:
            raise TagscaleError(f"model {name_or_path} is not fetched; run `tagscale pretrained fetch`")
        if not is_current(info):
            print(
                f"tagscale: converting {name_or_path} to the current serving graph (once; same weights)",
                file=sys.stderr,
            )
            fetch([name_or_path], cache_dir)  # from the cached wheel: same weights, faster graph
        return path
    if "://" in name_or_path or os.path.isdir(name_or_path):
        return name_or_path
    raise TagscaleError(
        f"unknown model {name_or_path!r}: not a pretrained model ({', '.join(MODELS)}) nor a model directory"
    )


def provenance(info: dict, path: str) -> dict:
    """Where the serving model at ``path`` (its info dict ``info``) came from and on what terms.

    A fetched musicnn model: the wheel's licence, source and SHA-256, commercial use allowed.
    Any other model (a trainer export): its terms are those of the data it was trained on, so
    commercial use is unknown (None) unless the export records a ``commercial`` value.
    """
    name = info.get("name")
    if name in MODELS and info.get("source") == SOURCE:
        return {
            "name": name,
            "version": info.get("version"),
            "license": LICENSE,
            "source": WEIGHTS_SOURCE,
            "sha256": WHEEL_SHA256,
            "commercial": True,
        }
    commercial = info.get("commercial")
    return {
        "name": name,
        "version": info.get("version"),
        "license": info.get("license", TRAINED_LICENSE),
        "source": path,
        "sha256": None,
        "commercial": commercial if isinstance(commercial, bool) else None,
        **{key: info[key] for key in ("features_dir", "recipe") if key in info},
    }


def list_models(cache_dir: str | None = None) -> list[dict]:
    """One row per pretrained model: name, dataset, tags, path (or None when not fetched),
    then its licence, source, the wheel's SHA-256 and whether commercial use is allowed."""
    rows = []
    for spec in MODELS.values():
        path = model_dir(spec.name, cache_dir)
        info = fetched_info(path)
        rows.append(
            {
                "name": spec.name,
                "dataset": spec.dataset,
                "tags": info["n_tags"] if info else spec.n_tags,
                "path": path if info else None,
                "license": LICENSE,
                "source": WEIGHTS_SOURCE,
                "sha256": WHEEL_SHA256,
                "commercial": True,
            }
        )
    return rows
