#!/usr/bin/env bash
# Install rlkit (editable) with its test tools into the current Python environment.
#
# torch comes first so that the package's `torch>=2.2` requirement is already met: on a machine without an
# NVIDIA GPU we pin the CPU build (torch==2.13.0, a local CPU wheel here) instead of letting pip resolve a
# multi-GB CUDA build. Set RLKIT_TORCH="torch==X.Y" (and RLKIT_TORCH_INDEX=URL) to choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install --disable-pip-version-check -q)

if "$PY" -c "import torch" 2>/dev/null; then
    echo "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
else
    if [ -n "${RLKIT_TORCH:-}" ]; then
        spec=$RLKIT_TORCH
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        spec="torch"            # a GPU machine: the default (CUDA) build
    else
        spec="torch==2.13.0"    # CPU machine: the CPU build
    fi
    echo "installing $spec"
    if [ -n "${RLKIT_TORCH_INDEX:-}" ]; then
        "${PIP[@]}" "$spec" --index-url "$RLKIT_TORCH_INDEX"
    else
        "${PIP[@]}" "$spec"
    fi
fi
"${PIP[@]}" -e ".[test]"
echo "rlkit installed: $("$PY" -c 'import rlkit, torch; print(rlkit.__version__, "torch", torch.__version__)')"
