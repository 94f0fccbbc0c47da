#!/usr/bin/env python3
"""Compare an Ardour export with a `voxsift render` of the same input.

Reads both WAVs (float or PCM, via numpy), reports the max abs difference at
offset 0 (Ardour's latency compensation is expected to have lined them up) and,
if that's not within tolerance, searches the best integer offset by
cross-correlation and reports the difference there too.

Usage: compare.py ARDOUR.wav CLI.wav [--tol 1e-5] [--max-lag 20000] [--json OUT.json]
Exit status: 0 when max |diff| at offset 0 <= tol, 1 otherwise.
"""
import argparse
import json
import sys

import numpy as np


def read_wav(path):
    data = open(path, "rb").read()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", f"{path}: not RIFF/WAVE"
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            tag = int.from_bytes(body[0:2], "little")
            ch = int.from_bytes(body[2:4], "little")
            rate = int.from_bytes(body[4:8], "little")
            bits = int.from_bytes(body[14:16], "little")
            if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: subformat GUID's first 2 bytes
                tag = int.from_bytes(body[24:26], "little")
            fmt = (tag, ch, rate, bits)
        elif cid == b"data":
            payload = body
            break
        pos += 8 + size + (size & 1)
    tag, ch, rate, bits = fmt
    if tag == 3 and bits == 32:
        x = np.frombuffer(payload, dtype="<f4").astype(np.float64)
    elif tag == 3 and bits == 64:
        x = np.frombuffer(payload, dtype="<f8")
    elif tag == 1 and bits == 16:
        x = np.frombuffer(payload, dtype="<i2") / 32768.0
    elif tag == 1 and bits == 24:
        b = np.frombuffer(payload, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)
    elif tag == 1 and bits == 32:
        x = np.frombuffer(payload, dtype="<i4") / 2147483648.0
    else:
        raise SystemExit(f"{path}: unsupported WAV format tag={tag} bits={bits}")
    return x.reshape(-1, ch), rate


def diff_at(a, b, lag):
    """max |a[n + lag] - b[n]| over the overlap, and the overlap length."""
    if lag >= 0:
        a2, b2 = a[lag:], b
    else:
        a2, b2 = a, b[-lag:]
    n = min(len(a2), len(b2))
    if n == 0:
        return float("inf"), 0
    return float(np.max(np.abs(a2[:n] - b2[:n]))), n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ardour")
    ap.add_argument("cli")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--max-lag", type=int, default=20000)
    ap.add_argument("--json")
    args = ap.parse_args()

    a, ra = read_wav(args.ardour)
    b, rb = read_wav(args.cli)
    assert ra == rb, f"rates differ: {ra} vs {rb}"
    assert a.shape[1] == b.shape[1], f"channel counts differ: {a.shape[1]} vs {b.shape[1]}"
    res = {
        "ardour_samples": len(a), "cli_samples": len(b), "channels": a.shape[1], "rate": ra,
        "ardour_peak": float(np.max(np.abs(a))), "cli_peak": float(np.max(np.abs(b))),
    }
    d0, n0 = diff_at(a, b, 0)
    res["max_abs_diff_at_0"] = d0
    res["overlap_at_0"] = n0
    ref = float(np.sqrt(np.mean(b[:n0] ** 2)))
    res["rms_diff_at_0"] = float(np.sqrt(np.mean((a[:n0] - b[:n0]) ** 2)))
    res["cli_rms"] = ref

    # Best lag by cross-correlation of the channel means (FFT), then exact diff there.
    am, bm = a.mean(axis=1), b.mean(axis=1)
    n = 1 << int(np.ceil(np.log2(len(am) + len(bm))))
    xc = np.fft.irfft(np.fft.rfft(am, n) * np.conj(np.fft.rfft(bm, n)), n)
    lags = np.concatenate([np.arange(0, args.max_lag + 1), np.arange(-args.max_lag, 0)])
    best = int(lags[np.argmax(xc[lags % n])])
    res["best_lag_xcorr"] = best  # a[n + lag] ~ b[n]
    res["max_abs_diff_at_best_lag"], res["overlap_at_best_lag"] = diff_at(a, b, best)
    # First sample where the two differ by more than tol (at offset 0), if any.
    over = np.nonzero(np.max(np.abs(a[:n0] - b[:n0]), axis=1) > args.tol)[0]
    res["first_sample_over_tol"] = int(over[0]) if len(over) else None
    res["samples_over_tol"] = int(len(over))
    res["tol"] = args.tol
    res["pass"] = d0 <= args.tol and len(a) == len(b)

    for k, v in res.items():
        print(f"{k:28s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    sys.exit(0 if res["pass"] else 1)


if __name__ == "__main__":
    main()
