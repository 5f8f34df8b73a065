#!/usr/bin/env bash
# Creates .venv-rembg: the real rembg (CPU onnxruntime, no torch), used only as the
# reference that benchmarks/rembg_agreement.py compares u2seg's masks against.
# It lives in its own venv so that rembg's pins never touch u2seg's environment.
#
# Idempotent: an existing venv that already imports rembg is left as it is.
#   bash benchmarks/setup_rembg.sh            # creates or checks .venv-rembg
#   REMBG_VERSION=2.0.86 bash benchmarks/setup_rembg.sh
#   PYTHON=python3.12 REMBG_VENV=/tmp/rr bash benchmarks/setup_rembg.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REMBG_VENV:-$ROOT/.venv-rembg}"
PYTHON="${PYTHON:-python3}"
# Pinned so that the README's numbers can be reproduced; override to test another release.
REMBG_VERSION="${REMBG_VERSION:-2.0.86}"
export ORT_DISABLE_TELEMETRY=1

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV with $("$PYTHON" --version 2>&1)" >&2
    "$PYTHON" -m venv "$VENV"
fi

# The "cpu" extra brings onnxruntime (the plain package has no runtime at all); the "cli"
# extra (gradio, fastapi, ...) is not needed: the benchmark calls rembg's Python API.
if ! "$VENV/bin/python" -c "import rembg, onnxruntime" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "rembg[cpu]==$REMBG_VERSION"
fi

# torch must not end up here: it would make the reference less independent and much bigger.
if "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
    echo "error: torch is installed in $VENV; remove it (the rembg reference must not use it)" >&2
    exit 1
fi

# Versions from package metadata: importing rembg compiles numba code (about a minute).
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
print(f"rembg {version('rembg')}, onnxruntime {version('onnxruntime')}")
EOF
