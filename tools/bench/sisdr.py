#!/usr/bin/env python3
"""Scale-invariant SDR and music residual, the scores used by the Voxsift benchmarks.

    sisdr.py EST REF [MIX] [--other OTHER] [--channels downmix|joint] [--zero-mean]

SI-SDR follows Le Roux et al., "SDR - half-baked or well done?" (ICASSP 2019):

    alpha  = <est, ref> / <ref, ref>
    SI-SDR = 10 log10( |alpha ref|^2 / |est - alpha ref|^2 )

Multichannel files: by default (`--channels downmix`) every signal is first averaged to mono
and scored once; this is how the project's published figures were computed (DESIGN.md:
mixture cx01 0.8, cx02 5.7, cx04 2.8 dB). `--channels joint` instead concatenates the channels
into one vector (one scale factor for the whole file), which also penalises per-channel errors
that cancel in the downmix; for the stereo clips cx01/cx02 the mixtures score 0.0 / 5.0 dB that
way. Mono files score the same either way. By default no mean is removed: the paper assumes
zero-mean signals, and audio files are zero-mean to within a negligible DC offset;
`--zero-mean` subtracts each channel's mean first, as some toolkits do (for the eval
clips the two differ by under 0.01 dB).

Music residual (needs the other stem, `--other`): the least-squares fit

    est ~= a speech + b other + e

(on the same channel combination as SI-SDR), reported as 20 log10( |b| |other| / (|a| |speech|) ) in dB: how loud the
music left in the estimate is relative to the speech in it (the mixture itself scores
-SNR; lower is better).

Alignment is sample-by-sample, with no lag search: every signal is resampled to REF's rate
(polyphase) and all are trimmed to the shortest length. With `--channels joint` the channel
counts must agree; if they do not, everything is downmixed to mono (with a warning).
"""
from __future__ import annotations

import argparse
import sys
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly


def load(path: str, rate: int | None = None) -> tuple[np.ndarray, int]:
    """Reads a file as float64 (frames, channels); resamples to `rate` if given."""
    x, sr = sf.read(path, always_2d=True, dtype="float64")
    if rate is not None and sr != rate:
        g = gcd(sr, rate)
        x = resample_poly(x, rate // g, sr // g, axis=0)
        sr = rate
    return x, sr


CHANNEL_MODES = ("downmix", "joint")


def align(*signals: np.ndarray, channels: str = "downmix") -> list[np.ndarray]:
    """Trims to the common length; downmixes to mono for `downmix` or if channel counts differ."""
    if channels not in CHANNEL_MODES:
        raise ValueError(f"channels must be one of {CHANNEL_MODES}, not {channels!r}")
    n = min(len(s) for s in signals)
    chans = {s.shape[1] for s in signals}
    out = [s[:n] for s in signals]
    if channels == "downmix":
        return [s.mean(axis=1, keepdims=True) for s in out]
    if len(chans) > 1:
        print(f"warning: channel counts differ {sorted(chans)}; downmixing to mono", file=sys.stderr)
        out = [s.mean(axis=1, keepdims=True) for s in out]
    return out


def _prep(x: np.ndarray, zero_mean: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if zero_mean:
        x = x - x.mean(axis=0, keepdims=True)
    return x.reshape(-1, order="F")  # channel after channel


def si_sdr(est: np.ndarray, ref: np.ndarray, zero_mean: bool = False) -> float:
    """SI-SDR in dB of `est` against `ref` (same shape), over all channels."""
    e, r = _prep(est, zero_mean), _prep(ref, zero_mean)
    rr = float(r @ r)
    if rr == 0.0:
        return float("nan")
    target = (float(e @ r) / rr) * r
    noise = e - target
    tt, nn = float(target @ target), float(noise @ noise)
    if nn == 0.0:
        return float("inf")
    if tt == 0.0:
        return float("-inf")
    return 10.0 * np.log10(tt / nn)


def music_residual(est: np.ndarray, speech: np.ndarray, other: np.ndarray,
                   zero_mean: bool = False) -> float:
    """20 log10(|b| |other| / (|a| |speech|)) from the fit est ~= a speech + b other."""
    e, s, o = (_prep(v, zero_mean) for v in (est, speech, other))
    basis = np.stack([s, o], axis=1)
    (a, b), *_ = np.linalg.lstsq(basis, e, rcond=None)
    num = abs(b) * np.linalg.norm(o)
    den = abs(a) * np.linalg.norm(s)
    if den == 0.0:
        return float("inf")
    if num == 0.0:
        return float("-inf")
    return 20.0 * np.log10(num / den)


def score_files(est_path: str, ref_path: str, mix_path: str | None = None,
                other_path: str | None = None, zero_mean: bool = False,
                channels: str = "downmix") -> dict[str, float]:
    """Scores files; keys: si_sdr, and when given: si_sdr_mix, improvement, residual."""
    ref, sr = load(ref_path)
    sigs = [load(est_path, sr)[0], ref]
    if mix_path:
        sigs.append(load(mix_path, sr)[0])
    if other_path:
        sigs.append(load(other_path, sr)[0])
    sigs = align(*sigs, channels=channels)
    est, ref = sigs[0], sigs[1]
    out = {"si_sdr": si_sdr(est, ref, zero_mean)}
    rest = sigs[2:]
    if mix_path:
        mix = rest.pop(0)
        out["si_sdr_mix"] = si_sdr(mix, ref, zero_mean)
        out["improvement"] = out["si_sdr"] - out["si_sdr_mix"]
    if other_path:
        out["residual"] = music_residual(est, ref, rest.pop(0), zero_mean)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("est", help="estimate (e.g. the enhanced file)")
    p.add_argument("ref", help="reference (the clean speech stem)")
    p.add_argument("mix", nargs="?", help="mixture: also print its SI-SDR and the improvement")
    p.add_argument("--other", help="the other (music) stem: also print the music residual")
    p.add_argument("--channels", choices=CHANNEL_MODES, default="downmix",
                   help="how multichannel files are scored (default: downmix)")
    p.add_argument("--zero-mean", action="store_true", help="remove each channel's mean first")
    a = p.parse_args()
    r = score_files(a.est, a.ref, a.mix, a.other, a.zero_mean, a.channels)
    print(f"SI-SDR          {r['si_sdr']:8.2f} dB")
    if "si_sdr_mix" in r:
        print(f"SI-SDR mixture  {r['si_sdr_mix']:8.2f} dB")
        print(f"improvement     {r['improvement']:8.2f} dB")
    if "residual" in r:
        print(f"music residual  {r['residual']:8.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
