# syntax=docker/dockerfile:1
# u2seg in a container: the HTTP service by default, the whole CLI too, with the default pretrained
# weights inside (it runs offline). CPU build; for NVIDIA GPUs, see "Container" in README.md.
#
#   docker build -t u2seg .                              # or: make image (podman or docker)
#   docker run -p 7000:7000 u2seg                        # http://localhost:7000/
#   docker run --rm -v "$PWD:/data" u2seg u2seg remove /data/in -o /data/out
#
# Build arguments:
#   BASE          the Python 3.11 base image (default python:3.11-slim; `make image` passes a
#                 Debian-made one where no registry can be reached)
#   TORCH_INDEX   where torch comes from (default PyTorch's CPU wheels; .../whl/cu128 for CUDA)
#   TORCH_VERSION pinned as in the Makefile
#   WEIGHTS       pretrained weights baked into the image (space-separated registry names)
# Optional build secrets (never stored in a layer): `pip.env` (PIP_* settings, sourced) and
# `ca.crt` (a CA bundle for pip and the weights download, behind a TLS-inspecting proxy).
# Optional: wheels in build/wheels/ of the context are used first (make image puts the local
# CPU torch wheel there when the machine has one).

ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ARG WEIGHTS="u2net u2netp"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/u2seg/venv
# One RUN: the secrets are mounted only while it runs. The source is bound read-write so that
# setuptools can write its build files; nothing of them stays in the image.
RUN --mount=type=bind,target=/src,rw \
    --mount=type=secret,id=pip.env \
    --mount=type=secret,id=ca.crt \
    set -eu; \
    if [ -f /run/secrets/pip.env ]; then set -a; . /run/secrets/pip.env; set +a; fi; \
    if [ -f /run/secrets/ca.crt ]; then export PIP_CERT=/run/secrets/ca.crt SSL_CERT_FILE=/run/secrets/ca.crt; fi; \
    pip=/opt/u2seg/venv/bin/pip; \
    if ls /src/build/wheels/torch-${TORCH_VERSION}* >/dev/null 2>&1; then \
        $pip install --find-links /src/build/wheels "torch==${TORCH_VERSION}"; \
    else \
        $pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"; \
    fi; \
    $pip install /src; \
    rm -rf /src/build/lib /src/build/bdist* /src/src/*.egg-info; \
    export U2SEG_HOME=/tmp/u2seg-home; \
    for name in ${WEIGHTS}; do /opt/u2seg/venv/bin/u2seg weights fetch "$name"; done; \
    mkdir -p /opt/u2seg/pretrained; \
    mv /tmp/u2seg-home/weights/* /opt/u2seg/pretrained/; \
    rm -rf /tmp/u2seg-home; \
    find /opt/u2seg/venv -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE}
COPY --from=build /opt/u2seg /opt/u2seg
# A fixed non-root user, written directly (a minimal Debian base has no useradd).
RUN echo 'u2seg:x:10001:10001:u2seg:/var/lib/u2seg:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'u2seg:x:10001:' >> /etc/group \
 && mkdir -p /var/lib/u2seg /data \
 && chown 10001:10001 /var/lib/u2seg /data
# U2SEG_HOME (the volume) holds exports, compiled caches and weights fetched later; the baked
# weights stay in /opt/u2seg/pretrained, so a mounted volume never hides them.
ENV PATH=/opt/u2seg/venv/bin:$PATH \
    U2SEG_HOME=/var/lib/u2seg \
    U2SEG_PRETRAINED=/opt/u2seg/pretrained \
    NUMBA_CACHE_DIR=/var/lib/u2seg/numba \
    ORT_DISABLE_TELEMETRY=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    PYTHONUNBUFFERED=1
VOLUME /var/lib/u2seg
USER 10001:10001
WORKDIR /data
EXPOSE 7000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7000/healthz', timeout=4)"]
CMD ["u2seg", "serve", "--host", "0.0.0.0", "--port", "7000"]
