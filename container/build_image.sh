#!/usr/bin/env bash
# Build the u2seg image with podman or docker (whichever is installed): `make image` runs this.
#
#   IMAGE=localhost/u2seg:latest BASE=python:3.11-slim container/build_image.sh
#
# - BASE unset: python:3.11-slim when a registry answers, else a Debian base made here from
#   Debian's packages (mmdebstrap, then imported as localhost/u2seg-debian-py:bookworm).
# - pip's settings (the PIP_* variables) and CA certificate (PIP_CERT or SSL_CERT_FILE) go in as
#   build secrets, never into a layer.
# - A local CPU torch wheel (in PIP_FIND_LINKS, e.g. /opt/wheels) is copied to build/wheels/ and
#   used first; otherwise torch comes from PyTorch's CPU index.
# - podman on machines like this project's (runc only, no default ulimits allowed) gets a
#   containers.conf of ours through CONTAINERS_CONF.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/u2seg:latest}
DEBIAN_BASE=localhost/u2seg-debian-py:bookworm
TORCH_VERSION=$(sed -n 's/.*torch==\([0-9.]*\).*/\1/p' Makefile | head -1)
mkdir -p build/wheels build/secrets
chmod 700 build/secrets

if command -v podman >/dev/null 2>&1; then
    ENGINE=podman
    conf=build/containers.conf
    { echo '[containers]'; echo 'default_ulimits = []'
      if command -v runc >/dev/null 2>&1; then echo '[engine]'; echo 'runtime = "runc"'; fi; } > "$conf"
    export CONTAINERS_CONF=$PWD/$conf
    FORMAT=(--format docker)      # keeps HEALTHCHECK (the OCI format has none)
elif command -v docker >/dev/null 2>&1; then
    ENGINE=docker
    FORMAT=()
else
    echo "make image: neither podman nor docker is installed (apt-get install podman runc)" >&2
    exit 1
fi

if [ -z "${BASE:-}" ]; then
    if timeout 60 "$ENGINE" pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
        BASE=docker.io/library/python:3.11-slim
    else
        BASE=$DEBIAN_BASE
        if ! "$ENGINE" image exists "$BASE" 2>/dev/null && ! "$ENGINE" image inspect "$BASE" >/dev/null 2>&1; then
            command -v mmdebstrap >/dev/null || { echo "make image: no registry answers and mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
            echo "make image: no registry answers; making $BASE from Debian's packages" >&2
            mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates bookworm build/rootfs.tar
            "$ENGINE" import build/rootfs.tar "$BASE" >/dev/null
            rm -f build/rootfs.tar
        fi
    fi
fi

# A local CPU torch wheel, when pip's find-links has one.
rm -f build/wheels/*.whl
for dir in ${PIP_FIND_LINKS:-}; do
    for wheel in "$dir"/torch-"$TORCH_VERSION"*cp311*.whl; do
        [ -f "$wheel" ] && cp "$wheel" build/wheels/
    done
done

# Secrets: pip settings that make sense inside (not host paths), and the CA bundle.
secrets=()
env | grep '^PIP_' | grep -v -E '^PIP_(CERT|FIND_LINKS|CONSTRAINT|CONFIG_FILE)=' | sed "s/'/'\\\\''/g; s/=\(.*\)/='\1'/" \
    > build/secrets/pip.env || true
secrets+=(--secret id=pip.env,src=build/secrets/pip.env)
ca=${PIP_CERT:-${SSL_CERT_FILE:-}}
if [ -n "$ca" ] && [ -f "$ca" ]; then
    secrets+=(--secret "id=ca.crt,src=$ca")
fi

echo "make image: $ENGINE build -t $IMAGE (base $BASE, torch $TORCH_VERSION)" >&2
started=$(date +%s)
"$ENGINE" build "${FORMAT[@]}" --build-arg "BASE=$BASE" --build-arg "TORCH_VERSION=$TORCH_VERSION" \
    "${secrets[@]}" -t "$IMAGE" -f Dockerfile .
rm -rf build/secrets
echo "make image: built $IMAGE in $(( $(date +%s) - started )) s" >&2
