# kubeinfer operator image: the `kubeinfer` package (operator, storage initializer, CLI) and
# kubeinfer-router (router/, the `kubeinfer-router` command the operator's router Deployments
# run: its dependencies are the operator's plus uvloop). No model runtime: no onnxruntime, no
# tritonclient (operator/pyproject.toml and router/pyproject.toml list what it carries).
#
# Build from the repository root:   docker build -f docker/operator.Dockerfile -t kubeinfer-operator .
# `make images` builds it here with buildah on a Python base made from Debian packages
# (docs/images.md); PYTHON_IMAGE chooses the base, so this file stays valid for `docker build`.
#
# Base image: python:3.11-slim on Debian bookworm, pinned by tag; pin it by digest too where a
# registry is reachable (none is from this workplace, so no digest is made up here):
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> ...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the package and its dependencies in a venv; no build tools ship ----
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# python3, not python: Debian's interpreter has no `python` alias (the official image has both).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PROGRESS_BAR=off
# Dependencies first, from pyproject.toml alone: a source change then reuses this layer.
# The optional `pip_ca` build secret is a CA bundle for pip behind a TLS-inspecting proxy
# (`make images` passes the host's); it is mounted for the step only, never stored in a layer.
# A current pip first: Debian's 23.0 backtracks for minutes over boto3/botocore versions.
# constraints-dev.txt: the versions `make test` last passed with (its header says why), so the
# image holds what was tested, not whatever is newest on the day it is built.
COPY constraints-dev.txt ./
COPY operator/pyproject.toml ./operator/
COPY router/pyproject.toml ./router/
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && python -c "import tomllib; print('\n'.join(d for p in ('operator', 'router') for d in tomllib.load(open(f'{p}/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -q --upgrade pip \
 && pip install -q -r /tmp/requirements.txt -c constraints-dev.txt
COPY VERSION ./
COPY operator ./operator
COPY router ./router
# Size: kubernetes' asyncio twin of its client (kubernetes/aio, ~70 MB) is never imported
# (kubeinfer uses the sync client, kopf its own). Unchecked-hash bytecode: valid whatever the
# file times after COPY, so the interpreter never tries (and fails, on a read-only root) to
# rewrite a .pyc. pip and setuptools do not ship.
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && pip install -q --no-deps ./operator ./router \
 && pip uninstall -q -y pip setuptools \
 && site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && rm -rf "$site/kubernetes/aio" \
 && find /opt/venv -depth -type d -name __pycache__ -exec rm -rf {} + \
 && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} + \
 && python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib \
 && kubeinfer --help >/dev/null \
 && kubeinfer-router --help >/dev/null \
 && python -c "import kubeinfer.handlers.main, kubeinfer.storage.main, kubeinfer_router.proxy"

# ---- runtime: the venv only, as uid 1000 (the chart's runAsUser), read-only root friendly ----
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --gid 1000 kubeinfer \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin kubeinfer
USER 1000:1000
# 8080: kopf liveness (/healthz); 8081: Prometheus /metrics.
EXPOSE 8080 8081
ENTRYPOINT ["kubeinfer"]
CMD ["operator", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=8081"]
