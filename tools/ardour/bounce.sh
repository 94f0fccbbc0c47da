#!/usr/bin/env bash
# Render a file through Voxsift (VST3) in a headless Ardour 7 session and compare the
# export with `voxsift render` of the same file. Run from anywhere; paths are relative to
# the repository root. See docs/ardour.md.
#
#   tools/ardour/bounce.sh [INPUT] [WORKDIR]
#     INPUT    mono audio file (default demo/demo_mix.flac); converted to 32-bit float WAV
#     WORKDIR  scratch folder (default out/ardour; wiped first)
#   env: ARDOUR_BLOCK  engine period for the setup step (default 512)
#        TOL           max |diff| allowed (default 1e-5)
#        ARDOUR_TIMEOUT seconds per Ardour tool before giving up (default 600)
#
# Exit status: 0 when the Ardour export matches the CLI render within TOL at offset 0
# (Ardour is expected to compensate the plug-in's latency), 1 when it doesn't, 2 on setup
# errors. Needs Debian's `ardour` (7.3), sox, python3 with numpy, target/bundled/Voxsift.vst3
# (cargo xtask bundle voxsift --release) and target/release/voxsift.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

INPUT="${1:-demo/demo_mix.flac}"
WORK="${2:-out/ardour}"
BLOCK="${ARDOUR_BLOCK:-512}"
TOL="${TOL:-1e-5}"
TMO="${ARDOUR_TIMEOUT:-600}"  # Ardour's session tools hang (not exit) on fatal errors
NAME=vox
BUNDLE="$ROOT/target/bundled/Voxsift.vst3"
CLI="$ROOT/target/release/voxsift"
SCANNER=/usr/lib/ardour7/ardour-vst3-scanner

die() { echo "bounce.sh: $*" >&2; exit 2; }
for t in ardour7-lua ardour7-new_session ardour7-export sox; do
  command -v "$t" >/dev/null || die "$t not found (apt-get install ardour sox)"
done
[ -x "$SCANNER" ] || die "$SCANNER not found (Debian package ardour)"
[ -d "$BUNDLE" ] || die "$BUNDLE missing: cargo xtask bundle voxsift --release"
[ -x "$CLI" ] || die "$CLI missing: cargo build --release -p voxsift-app --bin voxsift"
PY=python3
$PY -c 'import numpy' 2>/dev/null || PY=/usr/bin/python3
$PY -c 'import numpy' 2>/dev/null || die "python3 with numpy needed (apt-get install python3-numpy)"

rm -rf "$WORK"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
LOG="$WORK/ardour.log"

# Keep Ardour's config and plug-in cache inside WORK, away from ~/.config and ~/.cache.
export XDG_CONFIG_HOME="$WORK/xdg/config" XDG_CACHE_HOME="$WORK/xdg/cache"
mkdir -p "$XDG_CONFIG_HOME" "$XDG_CACHE_HOME"
# Ardour only reads its VST3 cache headless (no discovery): fill it with Ardour's scanner.
export VST3_PATH="$ROOT/target/bundled"

ardour_filter() { grep -v -e 'midnam' -e '^\^*$' -e 'Falling back to Reasonable Synth' \
                          -e 'call slot' -e 'call-slot' -e 'Butler drops pool trash' || true; }

echo "== Ardour: $(ardour7-lua --version 2>/dev/null | head -1)"
echo "== scan $BUNDLE"
LD_LIBRARY_PATH=/usr/lib/ardour7 "$SCANNER" -f -q "$BUNDLE" >>"$LOG" 2>&1 \
  || die "ardour-vst3-scanner failed, see $LOG"

echo "== input $INPUT -> $WORK/input.wav (32-bit float)"
sox "$INPUT" -e floating-point -b 32 "$WORK/input.wav"
RATE="$(soxi -r "$WORK/input.wav")"
[ "$(soxi -c "$WORK/input.wav")" = 1 ] || die "mono input only (inject_region.py makes one source)"

echo "== session $WORK/$NAME ($RATE Hz, mono master)"
timeout "$TMO" ardour7-new_session -m 1 -s "$RATE" "$WORK/$NAME" "$NAME" 2>&1 | ardour_filter >>"$LOG"
[ -f "$WORK/$NAME/$NAME.ardour" ] || die "ardour7-new_session failed, see $LOG"

echo "== add track + Voxsift (ardour7-lua tools/ardour/setup_session.lua)"
ARDOUR_SESSION_DIR="$WORK/$NAME" ARDOUR_SESSION_NAME="$NAME" ARDOUR_BLOCK="$BLOCK" \
  timeout "$TMO" ardour7-lua tools/ardour/setup_session.lua 2>&1 | ardour_filter | tee -a "$LOG" | grep '^voxsift-ardour' \
  || die "setup_session.lua failed, see $LOG"
grep -q 'type="vst3"' "$WORK/$NAME/$NAME.ardour" || die "no VST3 processor in the session, see $LOG"

echo "== put the audio on the track (inject_region.py)"
$PY tools/ardour/inject_region.py "$WORK/$NAME" "$NAME" Vox "$WORK/input.wav"

echo "== export (ardour7-export, freewheel, 32-bit float)"
start=$(date +%s.%N)
timeout "$TMO" ardour7-export -b float -o "$WORK/ardour.wav" "$WORK/$NAME" "$NAME" 2>&1 | ardour_filter | tr '\r' '\n' \
  | grep -v '^\* Exporting' >>"$LOG"
[ -f "$WORK/ardour.wav" ] || die "ardour7-export wrote nothing, see $LOG"
echo "   export took $(echo "$(date +%s.%N) - $start" | bc) s"

echo "== reference: voxsift render"
"$CLI" render "$WORK/input.wav" -o "$WORK/cli.wav" --bits 32 -f -q 2>&1 | tee -a "$LOG"
"$CLI" render "$WORK/input.wav" -o "$WORK/cli_realtime_sim.wav" --bits 32 -f -q --mode realtime-sim 2>&1 | tee -a "$LOG"

echo "== compare (Ardour export vs CLI offline render)"
set +e
$PY tools/ardour/compare.py "$WORK/ardour.wav" "$WORK/cli.wav" --tol "$TOL" --json "$WORK/compare.json"
status=$?
echo "== for reference: Ardour export vs the dry input"
$PY tools/ardour/compare.py "$WORK/ardour.wav" "$WORK/input.wav" --tol "$TOL" --json "$WORK/compare_dry.json" \
  | grep -E 'max_abs_diff_at_0|best_lag|samples_over_tol'
set -e
[ $status = 0 ] && echo "PASS: Ardour export == voxsift render within $TOL" \
                || echo "FAIL: Ardour export differs from voxsift render (see docs/ardour.md)"
exit $status
