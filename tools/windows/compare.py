"""Compares two WAV files sample by sample: same length and channels, and the largest absolute
difference at most --tolerance (full scale 1.0). Prints the largest difference and whether the
files are bit-identical; exits 1 when they differ by more than the tolerance.

Usage: compare.py A.wav B.wav [--tolerance 1e-5]
"""
import argparse
import sys

import numpy as np
from scipy.io import wavfile


def as_float(x):
    if x.dtype.kind == "f":
        return x.astype(np.float64)
    return x.astype(np.float64) / float(np.iinfo(x.dtype).max)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--tolerance", type=float, default=1e-5)
    args = ap.parse_args()
    ra, a = wavfile.read(args.a)
    rb, b = wavfile.read(args.b)
    if ra != rb or a.shape != b.shape:
        print(f"{args.a}: {ra} Hz {a.shape} vs {args.b}: {rb} Hz {b.shape}")
        return 1
    identical = a.dtype == b.dtype and np.array_equal(a, b)
    diff = float(np.max(np.abs(as_float(a) - as_float(b)))) if a.size else 0.0
    peak = float(np.max(np.abs(as_float(a)))) if a.size else 0.0
    print(
        f"{args.a} vs {args.b}: {a.shape[0]} frames, max |diff| {diff:.3e} "
        f"(peak {peak:.3f}), {'bit-identical' if identical else 'not bit-identical'}"
    )
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
