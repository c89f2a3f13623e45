# kubeinfer operator image: the `kubeinfer` package (operator, storage initializer, CLI).
#
# Build from the repository root:   docker build -f docker/operator.Dockerfile -t kubeinfer-operator .
# (`make images` builds it and the ONNX Runtime server image when a container builder exists.)
#
# Base image: python:3.11-slim on Debian bookworm, pinned by tag; pin it by digest too where a
# registry is reachable (none is from this workplace, so no digest is made up here):
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> ...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a wheel of the package and its dependencies in a venv; no build tools ship ----
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY VERSION ./
COPY operator ./operator
RUN pip install ./operator \
 && kubeinfer --help >/dev/null \
 && python -c "import kubeinfer.handlers.main"

# ---- runtime: the venv only, as uid 1000 (the chart's runAsUser), read-only root friendly ----
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --gid 1000 kubeinfer \
 && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin kubeinfer
USER 1000:1000
# 8080: kopf liveness (/healthz); 8081: Prometheus /metrics.
EXPOSE 8080 8081
ENTRYPOINT ["kubeinfer"]
CMD ["operator", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=8081"]
