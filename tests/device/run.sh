#!/usr/bin/env bash
# tests/device/run.sh: prove the ONNX server's GPU path on a machine with an NVIDIA GPU, in one
# command. Not part of `make test` (no GPU there); run it by hand where a GPU is:
#
#   bash tests/device/run.sh                  # needs pip access to PyPI (or a wheelhouse)
#   KUBEINFER_WHEELHOUSE=/path/to/wheels bash tests/device/run.sh   # offline
#   bash tests/device/run.sh --download /path/to/wheels   # fill a wheelhouse (networked, same
#                                                         # OS/arch/Python as the GPU machine)
#
# What it does: checks a GPU is visible (and stops at once, installing nothing, when none is);
# makes a venv with what the gpu image installs (runtimes/onnxruntime/requirements.py --device
# gpu: onnxruntime-gpu with CUDA/cuDNN wheels, nvidia-ml-py) plus pydantic for the operator's
# pure core; then tests/device/prove_gpu.py starts the server with --device gpu on a model it
# builds, checks the provider in use is CUDA or TensorRT, drives load, checks nv_gpu_* under
# load, and runs the operator's parsing and pure scaling step on the scraped pages to show the
# GPU veto acting. Output: tests/device/results/ (run.log, summary.txt, summary.json,
# server.log, gpu.txt). Commit that folder only after a run on a real GPU.
#
# Exit codes: 0 proven; 1 a check failed (summary.txt says which); 3 no GPU visible; 2 usage.
# Extra arguments go to prove_gpu.py (--seconds, --concurrency, --veto, --width, --layers).
set -euo pipefail

# --- a GPU must be visible, before anything is installed or written -------------------------
no_gpu() {
  echo "tests/device/run.sh: no NVIDIA GPU visible: $1." >&2
  echo "This script proves the GPU path and needs one; run it on a machine with an NVIDIA GPU" >&2
  echo "and its driver (nvidia-smi -L lists it). Nothing was installed or written." >&2
  exit 3
}

if [[ "${1:-}" != "--download" ]]; then
  # CUDA_VISIBLE_DEVICES empty or -1 hides every GPU from CUDA, whatever the driver sees.
  if [[ -v CUDA_VISIBLE_DEVICES && ( -z "$CUDA_VISIBLE_DEVICES" || "$CUDA_VISIBLE_DEVICES" == -* ) ]]; then
    no_gpu "CUDA_VISIBLE_DEVICES='$CUDA_VISIBLE_DEVICES' hides every GPU"
  fi
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    no_gpu "nvidia-smi is not on PATH (no NVIDIA driver on this machine)"
  fi
  if ! listed=$(nvidia-smi -L 2>&1) || [[ "$listed" != *"GPU "* ]]; then
    no_gpu "nvidia-smi -L says: ${listed:-nothing}"
  fi
fi

cd "$(dirname "$0")/../.."
PY_SYS=${PY_SYS:-python3}
if ! "$PY_SYS" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "tests/device/run.sh: needs Python >= 3.11 as \$PY_SYS (now: $PY_SYS)" >&2
  exit 2
fi
requirements() {
  "$PY_SYS" runtimes/onnxruntime/requirements.py --device gpu
  echo "pydantic>=2.6"  # the operator's pure core (api models); nothing else of the operator
}
# Installed without their own dependencies, as in the image (requirements.py says which).
bare_requirements() {
  "$PY_SYS" runtimes/onnxruntime/requirements.py --device gpu --no-deps
}

if [[ "${1:-}" == "--download" ]]; then
  [[ -n "${2:-}" ]] || { echo "usage: $0 --download DIR" >&2; exit 2; }
  mkdir -p "$2"
  "$PY_SYS" -m pip download -d "$2" -r <(requirements)
  "$PY_SYS" -m pip download -d "$2" --no-deps -r <(bare_requirements)
  echo "wheelhouse ready: KUBEINFER_WHEELHOUSE=$2 bash tests/device/run.sh (on the GPU machine)"
  exit 0
fi

RESULTS=tests/device/results
VENV=${KUBEINFER_DEVICE_VENV:-${KUBEINFER_CACHE:-$HOME/.cache/kubeinfer}/device-venv}
mkdir -p "$RESULTS"
exec > >(tee "$RESULTS/run.log") 2>&1

echo "== GPU"
echo "$listed"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$RESULTS/gpu.txt"

echo "== venv $VENV (the gpu image's requirements)"
[[ -x "$VENV/bin/python" ]] || "$PY_SYS" -m venv "$VENV"
pip_args=(-q)
[[ -n "${KUBEINFER_WHEELHOUSE:-}" ]] && pip_args+=(--no-index --find-links "$KUBEINFER_WHEELHOUSE")
# The CPU wheel shares the onnxruntime module: never both (requirements.py says why).
"$VENV/bin/python" -m pip uninstall -q -y onnxruntime 2>/dev/null || true
"$VENV/bin/python" -m pip install "${pip_args[@]}" -r <(requirements)
"$VENV/bin/python" -m pip install "${pip_args[@]}" --no-deps -r <(bare_requirements)
"$VENV/bin/python" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"

echo "== prove"
# The packages from this checkout, uninstalled: the server and the operator's pure core.
export PYTHONPATH="$PWD/runtimes/onnxruntime:$PWD/operator:$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$VENV/bin/python" tests/device/prove_gpu.py --results "$RESULTS" "$@"
