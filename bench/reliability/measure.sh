#!/usr/bin/env bash
# Run the failure-mode suite and write every figure it measures to bench/reliability/results.json
# (the numbers REPORT.md quotes). KUBEINFER_SOAK=1 runs the full-size operator crash soak.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=bench/reliability/results.json
rm -f "$out"
start=$(date +%s)
KUBEINFER_RELIABILITY_RESULTS="$PWD/$out" .venv/bin/pytest tests/reliability -q -s -p no:cacheprovider "$@"
echo "suite wall time: $(( $(date +%s) - start )) s; figures in $out"
