#!/usr/bin/env bash
# The CUDA path, verified (issue 16 item 5). Run it on a machine with an NVIDIA GPU; CI never does.
#
#   bash scripts/gpu_check.sh            # library tests on the GPU, then the batched-family benchmark
#
# The project's venv holds the CPU wheel torch==2.13.0 (no CUDA). On a GPU machine, give this script a
# Python whose torch has CUDA (PYTHON=/path/to/python), with the project installed (pip install -e .[test]).
# What it does:
#   1. refuses to run without a CUDA device (a silent fall-back to the CPU would verify nothing);
#   2. runs the library's unit tests (no browser, notebooks or hub) with every tensor on the GPU
#      (LECTURE_LIB_DEVICE=cuda, fast settings);
#   3. runs benchmarks/batched_sweep.py, which times the same batched family on the CPU and on the GPU in one
#      run and prints both (last line JSON) — copy those figures into docs/performance.md with the GPU's name.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device; run on a GPU machine with a CUDA build of torch")
print(f"gpu_check: torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
PY
export LECTURE_LIB_DEVICE=cuda LECTURE_FAST=1
status=0
"$PY" -m pytest -p no:cacheprovider -q -m "not browser and not notebook and not hub" \
    -k "not panel_controls_at_their_extremes" tests || status=$?
"$PY" benchmarks/batched_sweep.py || status=$?
exit "$status"
