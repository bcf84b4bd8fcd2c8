# The hitl image: the sidecar, the registry, the review queue and the injector are
# all `hitl` sub-commands of this one image (k8s/ runs each with its own command).
#
#   docker build -t ghcr.io/hitl-sidecar/hitl:0.1.0 .
#
# Multi-stage: the build stage installs the package and its runtime dependencies
# into a virtual environment; the final stage copies only that environment onto the
# same slim base, and runs as an unprivileged user with a fixed numeric id (10001,
# what the manifests' runAsUser and the injected sidecar's securityContext expect).
# The base is pinned to an exact Python and Debian release; pin its digest too
# (python:3.11.14-slim-bookworm@sha256:...) where the build can resolve it.
# No image is built in this repository's CI (there is no container engine there);
# the Dockerfile is linted with hadolint instead (make lint, tests/k8s).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/hitl
COPY pyproject.toml README.md ./
COPY client ./client
COPY sidecar ./sidecar
COPY calibrators ./calibrators
COPY monitor ./monitor
COPY hitl ./hitl
# The client distribution first (the sidecar depends on it), then the sidecar with the
# postgres extra (the registry and review queue on PostgreSQL, the production
# overlay), the web extra (the injector's HTTPS webhook), the nats extra (the
# JetStream sink) and the monitor extra (the calibration monitor's interval bounds
# and the reports' charts).
RUN /opt/hitl/bin/pip install --no-cache-dir "./client[tracing]" ".[postgres,web,nats,monitor]" \
    && /opt/hitl/bin/python -m compileall -q /opt/hitl/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="hitl" \
      org.opencontainers.image.description="Human-in-the-loop routing sidecar, registry, review queue and injector" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 hitl \
    && useradd --system --uid 10001 --gid hitl --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin hitl
COPY --from=build /opt/hitl /opt/hitl
ENV PATH=/opt/hitl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Writable state lives on volumes (the sidecar's HITL_STATE_DIR, /var/lib/hitl in
# Kubernetes); the root filesystem can be mounted read-only.
USER 10001:10001
# sidecar gRPC, review queue, registry, sidecar health (in Kubernetes), injector
# HTTPS, Prometheus metrics
EXPOSE 7431 7432 7433 7434 8443 9464
ENTRYPOINT ["hitl"]
CMD ["sidecar"]
