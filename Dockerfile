# Two images, one per place tagscale runs in the cloud (no Docker engine runs on the dev machines;
# this file is linted with hadolint in the tests, see docs/cloud.md).
#
#   docker build --target dataflow-worker -t REGION-docker.pkg.dev/PROJECT/tagscale/worker:0.1.0 .
#   docker build --target trainer         -t REGION-docker.pkg.dev/PROJECT/tagscale/trainer:0.1.0 .

# ---- the project's files, copied into both images ----------------------------------------------
FROM scratch AS source
COPY setup.py constraints.txt README.md /src/
COPY runtime/ /src/runtime/
COPY pipelines/ /src/pipelines/
COPY runfolder/ /src/runfolder/
COPY model/ /src/model/
COPY trainer/ /src/trainer/
COPY tagruns/ /src/tagruns/
COPY infra/ /src/infra/

# ---- Dataflow worker: Apache Beam's Python 3.11 SDK image of the pinned Beam version ----------
FROM apache/beam_python3.11_sdk:2.77.0 AS dataflow-worker
# A system ffmpeg decodes every format; the imageio-ffmpeg wheel is the fallback anyway.
# Debian's ffmpeg version follows the base image, which is pinned; so no apt pin (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
COPY --from=source /src /opt/tagscale
WORKDIR /opt/tagscale
RUN pip install --no-cache-dir -c constraints.txt .
# The SDK image's entrypoint (/opt/apache/beam/boot) is kept: Dataflow starts the SDK harness with it.

# ---- GPU trainer for Vertex AI custom jobs ----------------------------------------------------
FROM tensorflow/tensorflow:2.21.0-gpu AS trainer
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
COPY --from=source /src /opt/tagscale
WORKDIR /opt/tagscale
RUN pip install --no-cache-dir -c constraints.txt .
ENV TF_CPP_MIN_LOG_LEVEL=2
ENTRYPOINT ["python", "-m", "trainer.task"]
