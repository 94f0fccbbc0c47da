#!/usr/bin/env bash
# The Windows build, tested under Wine on Linux (RELIABILITY.md, "Platforms"):
#   0. lints the Windows-only code (clippy -D warnings for the Windows target);
#   1. cross-builds the debug bundles with assert_process_allocs for x86_64-pc-windows-gnu
#      (`cargo xtask bundle --target`, onnxruntime.dll from the pinned win_amd64 wheel);
#   2. runs `Voxsift.exe info` and renders the demo clip (and cx01/cx04 where
#      ../shared/eval-audio exists) with the Windows CLI, and compares each render with the
#      Linux CLI's render of the same file (tolerance 1e-5 of full scale: the two builds use
#      different libm and ONNX Runtime kernels, so they are close, not bit-identical);
#   3. checks that a missing onnxruntime.dll is a clear error that writes nothing;
#   4. runs the host tests of tests/ (CLAP through clack-host, VST3 through its COM interfaces,
#      lifecycle, faults, separator) as Windows executables under Wine against the Windows
#      bundles.
# Needs: rustup, Debian's gcc-mingw-w64-x86-64 and wine64 (.ci/run installs them), and the
# Linux CLI at target/debug/voxsift and .venv-xtask/ (both made by `cargo xtask test`).
# The Wine prefix is target/wine-prefix/. Rust's standard library imports ProcessPrng from
# bcryptprimitives.dll, which Wine 8 lacks: the prefix (never a bundle) gets a stand-in built
# from tools/windows/bcryptprimitives.c; and it uses Wine's null graphics driver (no display).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
triple=x86_64-pc-windows-gnu
started=$SECONDS
step() { echo "== [$((SECONDS - started)) s] $*"; }

for tool in x86_64-w64-mingw32-gcc wine winepath; do
  command -v "$tool" >/dev/null || {
    echo "$tool not found: install Debian's gcc-mingw-w64-x86-64, wine and wine64" >&2
    exit 1
  }
done
rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
python=$root/.venv-xtask/bin/python
linux_cli=$root/target/debug/voxsift
[[ -x $python && -x $linux_cli ]] || {
  echo "run \`cargo xtask test\` first (it makes .venv-xtask/ and target/debug/voxsift)" >&2
  exit 1
}

export WINEDEBUG=-all WINEPREFIX=$root/target/wine-prefix
if [[ ! -f $WINEPREFIX/.voxsift-ready ]]; then
  step "making the Wine prefix"
  rm -rf "$WINEPREFIX"
  wineboot --init >/dev/null 2>&1
  wineserver --wait
  x86_64-w64-mingw32-gcc -O2 -shared \
    -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
    tools/windows/bcryptprimitives.c tools/windows/bcryptprimitives.def -ladvapi32
  # No display: Wine's null graphics driver lets nice-plug's VST3 event loop make its
  # message-only window (without it CreateWindowExA fails and the VST3 factory aborts).
  wine reg add 'HKCU\Software\Wine\Drivers' /v Graphics /d null /f >/dev/null
  wineserver --wait
  touch "$WINEPREFIX/.voxsift-ready"
fi

step "clippy -D warnings for Windows (the Windows-only code)"
cargo clippy -p voxsift-engine -p voxsift-models -p voxsift-app -p voxsift -p voxsift-host-tests \
  -p xtask --all-targets --target "$triple" \
  -- -D warnings

step "cross-building the Windows debug bundles (assert_process_allocs)"
cargo xtask bundle voxsift --target "$triple" --features assert_process_allocs
bundled=$root/target/bundle-$triple/bundled
exe=$bundled/Voxsift.exe
for f in "$exe" "$bundled/Voxsift.clap" "$bundled/onnxruntime.dll" \
  "$bundled/Voxsift.vst3/Contents/x86_64-win/Voxsift.vst3" \
  "$bundled/Voxsift.vst3/Contents/x86_64-win/onnxruntime.dll"; do
  [[ -f $f ]] || { echo "missing from the Windows bundle: $f" >&2; exit 1; }
done
winpath() { winepath -w "$1"; }

step "Voxsift.exe info"
wine "$exe" info

out=$root/target/windows-renders
rm -rf "$out"
mkdir -p "$out"
renders=("demo:$root/demo/demo_mix.flac")
eval_mix=$root/../shared/eval-audio/mixtures
for id in cx01 cx04; do
  f=$(ls "$eval_mix"/"$id"* 2>/dev/null | head -n 1 || true)
  [[ -n $f ]] && renders+=("$id:$f")
done
for r in "${renders[@]}"; do
  name=${r%%:*} input=${r#*:}
  step "render $name: Windows (Wine) against Linux"
  wine "$exe" render "$(winpath "$input")" -o "$(winpath "$out/$name-windows.wav")" \
    --no-mask-cache
  "$linux_cli" render "$input" -o "$out/$name-linux.wav" --no-mask-cache
  "$python" tools/windows/compare.py "$out/$name-windows.wav" "$out/$name-linux.wav" \
    --tolerance 1e-5
done

step "a missing onnxruntime.dll is a clear error and writes nothing"
set +e
msg=$(VOXSIFT_ORT_LIB='C:\nowhere\onnxruntime.dll' wine "$exe" render \
  "$(winpath "$root/demo/demo_mix.flac")" -o "$(winpath "$out/missing.wav")" --no-mask-cache 2>&1)
code=$?
set -e
echo "$msg" | tail -n 5
[[ $code -eq 1 ]] || { echo "expected exit code 1, got $code" >&2; exit 1; }
[[ ! -e $out/missing.wav ]] || { echo "an output was written despite the error" >&2; exit 1; }
grep -qi 'onnxruntime' <<<"$msg" || { echo "the error does not name onnxruntime" >&2; exit 1; }

step "building the host tests for Windows"
mapfile -t tests < <(cargo test -p voxsift-host-tests --target "$triple" --no-run \
  --message-format=json |
  "$python" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
((${#tests[@]})) || { echo "no host test executables were built" >&2; exit 1; }

export VOXSIFT_CLAP=$(winpath "$bundled/Voxsift.clap")
export VOXSIFT_VST3=$(winpath "$bundled/Voxsift.vst3")
export VOXSIFT_CLI=$(winpath "$exe")
export VOXSIFT_ORT_LIB=$(winpath "$bundled/onnxruntime.dll")
export WINEPATH=$(winpath "$bundled")
failed=()
for t in "${tests[@]}"; do
  step "host tests under Wine: $(basename "$t")"
  # Tests run with the crate's folder as the working directory, as cargo runs them.
  (cd "$root/tests" && wine "$t" --test-threads=1) || failed+=("$(basename "$t")")
done
wineserver --wait || true
if ((${#failed[@]})); then
  echo "Windows host tests failed: ${failed[*]}" >&2
  exit 1
fi
step "the Windows build passed"
