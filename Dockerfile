# syntax=docker/dockerfile:1
#
# roomcast image: one image for every component, chosen by the first argument.
#
#   docker build -t roomcast:0.1.0 .          (or: scripts/container build, with podman)
#   docker run --rm -p 8080:8080 -p 9080:9080 roomcast:0.1.0 gateway --router tcp://HOST:5570 ...
#   docker run --rm roomcast:0.1.0 router      (or: worker MODULE:APP --router tcp://...)
#
# Stage 1 (builder) turns the source tree into wheels: `pip wheel .` builds roomcast itself
# (setup.py compiles proto/ with grpcio-tools, a [build-system] requirement that pip installs
# in an isolated build environment) and collects a wheel for every runtime dependency.
# Stage 2 (runtime) installs those wheels offline (--no-index) into a virtualenv of a clean
# base image: no compiler, no grpcio-tools, no source tree, and it runs as an unprivileged
# numeric user, so Kubernetes' runAsNonRoot can verify it (k8s/base uses the same uid).
#
# PYTHON_IMAGE is any Debian-based image with python3 and its venv module: python:3.11-slim by
# default, or one made from Debian's own packages where no registry can be reached
# (scripts/container base). Both stages use a virtualenv, so the distribution's Python (which
# refuses system-wide pip installs) and the official image are treated alike. PIP_CERT may be
# passed as a build argument where pip must trust a local certificate authority.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ARG PIP_CERT=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore keeps .venv, .git, tests, k8s and the generated roomcast/core/pb/ out of here.
COPY . .
# An empty PIP_CERT would name no file: pip then keeps its own certificate bundle.
RUN if [ -z "$PIP_CERT" ]; then unset PIP_CERT; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
# The HTTP listeners default to 127.0.0.1; inside a container they listen on every interface.
# The ZeroMQ addresses (ROOMCAST_COMMANDS, ROOMCAST_FANOUT) are not set here: ROOMCAST_FANOUT
# is a bind address to the router but a connect address to a gateway (k8s/ sets both per pod).
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/roomcast/bin:$PATH \
    ROOMCAST_HOST=0.0.0.0 \
    ROOMCAST_INTERNAL_HOST=0.0.0.0 \
    ROOMCAST_HTTP_HOST=0.0.0.0
RUN groupadd --system --gid 10001 roomcast \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin roomcast
# The wheels are bind-mounted from the builder, so they never become a layer of this image.
# The two --help runs import the router's and the gateway's entry modules and all they import
# (wire codec included): an incomplete wheel, one without the generated roomcast/core/pb/ say,
# fails the build instead of the pods.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python3 -m venv /opt/roomcast \
    && /opt/roomcast/bin/pip install --no-index --find-links=/wheels roomcast \
    && roomcast router --help >/dev/null \
    && roomcast gateway --help >/dev/null
WORKDIR /app
USER 10001:10001
# router: commands (ZeroMQ ROUTER), fanout (ZeroMQ PUB), http (health + metrics)
# gateway: public (/ws, /socket.io/, health), internal (metrics, health, HTTP API)
EXPOSE 5570 5571 5572 8080 9080
# Exec form: roomcast is PID 1 and `roomcast router|gateway` exec into `python -m ...`, so
# SIGTERM reaches the process that drains.
ENTRYPOINT ["roomcast"]
CMD ["--help"]
