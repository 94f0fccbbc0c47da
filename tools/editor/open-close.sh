#!/usr/bin/env bash
# Opens and closes the Voxsift editor 20 times in a real window while audio runs, and checks
# that every open draws, that the window's threads go away on close, that a host resize is
# what the state saves, and that resident memory does not grow after the first few opens.
#
# The test (`open_and_close_while_audio_runs` in plugin/src/editor.rs) plays the host:
# it creates a parent X window, spawns the editor into it as the CLAP wrapper does (spawn,
# set_parent, show, main-thread callbacks, drop), while a thread runs the plugin in realtime
# mode on a chirp over noise. It runs here under Xvfb with Mesa's software OpenGL.
#
# Debian/Ubuntu packages: xvfb. ONNX Runtime (`cargo xtask fetch-runtime`) is used if present;
# without it the worker fails and the plugin passes audio through, which the test also covers.
# Options (environment): DISPLAY_NUM (default 98).
set -euo pipefail
cd "$(dirname "$0")/../.."

display_num=${DISPLAY_NUM:-98}
command -v Xvfb >/dev/null || { echo "missing Xvfb: apt-get install xvfb" >&2; exit 1; }
if [[ -z ${VOXSIFT_ORT_LIB:-} ]]; then
  lib=$(ls runtime/onnxruntime-*/libonnxruntime.so* 2>/dev/null | grep -v gpu | head -n1 || true)
  [[ -n $lib ]] && export VOXSIFT_ORT_LIB=$PWD/$lib
fi

mkdir -p target/editor-shot
Xvfb ":$display_num" -screen 0 1280x800x24 -nolisten tcp >target/editor-shot/xvfb-open-close.log 2>&1 &
xvfb=$!
trap 'kill "$xvfb" 2>/dev/null || true' EXIT
sleep 1

DISPLAY=:$display_num LIBGL_ALWAYS_SOFTWARE=1 \
  cargo test -p voxsift --lib editor::window_tests -- --ignored --nocapture --test-threads 1
