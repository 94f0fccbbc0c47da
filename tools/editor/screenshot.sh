#!/usr/bin/env bash
# Takes docs/editor.png: the Voxsift editor in a real window while the demo clip plays through it.
#
# - a virtual X server (Xvfb) with Mesa's software OpenGL, for egui's glow renderer;
# - a private JACK server on its dummy driver (48 kHz, 512-sample periods), so no sound card;
# - `voxsift-standalone -b jack` (the plugin and its editor, nice-plug's standalone wrapper);
# - `jack-play` playing demo/demo_mix.flac (speech over taiko drums) into its inputs;
# - a screenshot of the window (ImageMagick `import`) once the spectrogram is full, then a check
#   that the image is not blank.
#
# Debian/Ubuntu packages: xvfb jackd2 jack-tools imagemagick xdotool (and ONNX Runtime:
# `cargo xtask fetch-runtime`). Run from anywhere; paths are relative to the repository root.
# Options (environment): OUT (default docs/editor.png), CLIP (default demo/demo_mix.flac),
# SHOT_AT (seconds of playback before the shot, default 14), DISPLAY_NUM (default 99).
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${OUT:-docs/editor.png}
clip=${CLIP:-demo/demo_mix.flac}
shot_at=${SHOT_AT:-14}
display_num=${DISPLAY_NUM:-99}
work=target/editor-shot
mkdir -p "$work" "$(dirname "$out")"

for tool in Xvfb jackd jack-play jack_connect jack_lsp import convert identify xdotool; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool: apt-get install xvfb jackd2 jack-tools imagemagick xdotool" >&2
    exit 1
  }
done
[[ -f $clip ]] || { echo "no clip at $clip" >&2; exit 1; }

if [[ -z ${VOXSIFT_ORT_LIB:-} ]]; then
  lib=$(ls runtime/onnxruntime-*/libonnxruntime.so* 2>/dev/null | grep -v gpu | head -n1 || true)
  [[ -n $lib ]] || { echo "no ONNX Runtime: run cargo xtask fetch-runtime" >&2; exit 1; }
  export VOXSIFT_ORT_LIB=$PWD/$lib
fi

echo "building voxsift-standalone"
cargo build -p voxsift --features standalone --bin voxsift-standalone
bin=target/debug/voxsift-standalone

rm -f "$work/player.pid" "$work/stop"
pids=() # started here, in order; stopped in reverse order
loop_pid=
stop() {
  local sig=$1 i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "-$sig" "${pids[i]}" 2>/dev/null
  done
  return 0
}
cleanup() {
  # The player loop ends after its current pass; end that pass and reap the loop.
  touch "$work/stop"
  [[ -f $work/player.pid ]] && kill -TERM "$(cat "$work/player.pid")" 2>/dev/null
  [[ -n $loop_pid ]] && wait "$loop_pid" 2>/dev/null
  stop TERM
  sleep 1
  stop KILL
}
trap cleanup EXIT

export DISPLAY=:$display_num
export LIBGL_ALWAYS_SOFTWARE=1
# A private JACK server, so a user's own JACK setup is left alone.
export JACK_DEFAULT_SERVER=voxsift-shot
export JACK_NO_AUDIO_RESERVATION=1

Xvfb "$DISPLAY" -screen 0 1280x800x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
pids+=($!)
jackd --no-realtime -d dummy --rate 48000 --period 512 >"$work/jackd.log" 2>&1 &
pids+=($!)
sleep 2

"$bin" -b jack >"$work/standalone.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  jack_lsp 2>/dev/null | grep -q '^voxsift:input_1$' && break
  sleep 0.1
done
jack_lsp | grep -q '^voxsift:input_1$' || { echo "the standalone did not start" >&2; cat "$work/standalone.log" >&2; exit 1; }
wid=$(xdotool search --sync --name '^Voxsift$' | head -n1)

# The clip in a loop (one jack-play per pass); its mono output feeds both plugin inputs.
(
  while [[ ! -f $work/stop ]]; do
    jack-play -u -n voxsift-clip "$clip" >>"$work/jack-play.log" 2>&1 &
    echo $! >"$work/player.pid"
    for _ in $(seq 50); do
      jack_lsp 2>/dev/null | grep -q '^voxsift-clip:out_1$' && break
      sleep 0.05
    done
    jack_connect voxsift-clip:out_1 voxsift:input_1 || true
    jack_connect voxsift-clip:out_1 voxsift:input_2 || true
    wait "$(cat "$work/player.pid")" || true
  done
) &
loop_pid=$!
echo "playing $clip into the plugin; screenshot in $shot_at s"
sleep "$shot_at"

import -window "$wid" "$out"
size=$(identify -format '%wx%h' "$out")
colours=$(identify -format '%k' "$out")
spread=$(convert "$out" -colorspace gray -format '%[fx:standard_deviation]' info:)
echo "$out: $size, $colours colours, grey standard deviation $spread"
if ((colours < 200)) || awk "BEGIN { exit !($spread < 0.05) }"; then
  echo "the screenshot looks blank" >&2
  exit 1
fi
