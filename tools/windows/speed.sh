#!/usr/bin/env bash
# Render speed of the Windows CLI under Wine against the Linux CLI, in the same run, on the
# same files (BENCHMARKS.md, "Windows under Wine"). Both are release builds from
# `cargo xtask dist` and `cargo xtask dist --target x86_64-pc-windows-gnu`.
#
#   tools/windows/speed.sh [AUDIO_FILE ...]   (default: cx01, cx02, cx04 of ../shared/eval-audio)
#
# Environment: REPEAT=3 (each figure is the median of the repetitions' totals),
# LINUX=target/bundled/Voxsift, WINDOWS=target/bundle-x86_64-pc-windows-gnu/bundled/Voxsift.exe,
# EVAL=../shared/eval-audio. Every render: offline, --threads 1, --no-mask-cache; wall time of
# the whole process (Wine's start-up included: it is part of what a user waits for).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEAT=${REPEAT:-3}
EVAL=${EVAL:-../shared/eval-audio}
LINUX=${LINUX:-target/bundled/Voxsift}
WINDOWS=${WINDOWS:-target/bundle-x86_64-pc-windows-gnu/bundled/Voxsift.exe}
export WINEDEBUG=-all WINEPREFIX=${WINEPREFIX:-$PWD/target/wine-prefix}
[[ -x $LINUX && -f $WINDOWS ]] || { echo "build both with cargo xtask dist first" >&2; exit 1; }
if [[ $# -gt 0 ]]; then FILES=("$@"); else
  FILES=()
  for id in cx01 cx02 cx04; do
    for f in "$EVAL"/mixtures/"$id"_*.flac; do [[ -f $f ]] && FILES+=("$f"); done
  done
fi
((${#FILES[@]})) || { echo "no input files (EVAL=$EVAL)" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/voxsift-winspeed.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
now() { date +%s.%N; }
audio=0
: >"$WORK/runs"
for rep in $(seq "$REPEAT"); do
  lin=0 win=0 lin_r=0 win_r=0
  for f in "${FILES[@]}"; do
    t0=$(now)
    msg=$("$LINUX" render "$f" -o "$WORK/l.wav" --force --threads 1 --no-mask-cache 2>&1)
    t1=$(now)
    if ((rep == 1)); then
      # The CLI's own report: "IN -> OUT: 7.7 s of audio in ...".
      d=$(sed -n 's/.*: \([0-9.]*\) s of audio in.*/\1/p' <<<"$msg" | tail -n 1)
      audio=$(echo "$audio + ${d:-0}" | bc -l)
    fi
    wmsg=$(wine "$WINDOWS" render "$(winepath -w "$f")" -o "$(winepath -w "$WORK/w.wav")" \
      --force --threads 1 --no-mask-cache 2>&1)
    t2=$(now)
    # The CLI's own render time ("... s of audio in T s"): without process start and decode.
    lr=$(sed -n 's/.* s of audio in \([0-9.]*\) s .*/\1/p' <<<"$msg" | tail -n 1)
    wr=$(sed -n 's/.* s of audio in \([0-9.]*\) s .*/\1/p' <<<"$wmsg" | tail -n 1)
    lin_r=$(echo "$lin_r + ${lr:-0}" | bc -l)
    win_r=$(echo "$win_r + ${wr:-0}" | bc -l)
    lin=$(echo "$lin + $t1 - $t0" | bc -l)
    win=$(echo "$win + $t2 - $t1" | bc -l)
  done
  echo "$lin $win $lin_r $win_r" >>"$WORK/runs"
  printf 'repetition %d: linux %.2f s, windows (wine) %.2f s\n' "$rep" "$lin" "$win"
done
med() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
l=$(cut -d' ' -f1 "$WORK/runs" | med)
w=$(cut -d' ' -f2 "$WORK/runs" | med)
lr=$(cut -d' ' -f3 "$WORK/runs" | med)
wr=$(cut -d' ' -f4 "$WORK/runs" | med)
printf 'files: %d, audio: %.1f s, repetitions: %d\n' "${#FILES[@]}" "$audio" "$REPEAT"
printf '| build | wall s | x real time (wall) | render s | x real time (render) |\n'
printf '|---|---|---|---|---|\n'
printf '| Linux | %.2f | %.1f | %.2f | %.1f |\n' "$l" "$(echo "$audio / $l" | bc -l)" \
  "$lr" "$(echo "$audio / $lr" | bc -l)"
printf '| Windows under Wine | %.2f | %.1f | %.2f | %.1f |\n' "$w" "$(echo "$audio / $w" | bc -l)" \
  "$wr" "$(echo "$audio / $wr" | bc -l)"
printf 'Windows / Linux: wall %.2f, render %.2f\n' "$(echo "$w / $l" | bc -l)" \
  "$(echo "$wr / $lr" | bc -l)"
