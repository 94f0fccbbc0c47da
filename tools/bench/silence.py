#!/usr/bin/env python3
"""Speech after digital silence: voxsift against libdeepfilter on clean speech with exact
zeros inserted between phrases (what TTS output, edited podcasts and prompt recordings have).

    silence.py SPEECH.flac [...] --voxsift BIN [--out DIR] [--seed 1] [--beta 1]
               [--extra-args "..."] [--no-ref]

For every input file: the quietest 10 ms frame inside each window of 1.5–3.5 s (chosen from a
seeded generator, the same for every run) is a phrase boundary; a run of 0.5–2 s of exact
zeros is inserted there. The result (OUT/NAME__gaps.wav, 48 kHz) is rendered by
`voxsift render --beta B --wet 1` and by libdeepfilter (tools/bench/ref_libdeepfilter.py, the
reference runtime), and each output is scored against the gapped input: SI-SDR over the whole
file and over the first 300 ms after every gap (the first syllables, where a cold model eats
speech). The plain input (no gaps) is scored too, as the control.

Nothing is tuned per file: the gap positions and lengths depend only on the seed and the
file's length and energy envelope.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

HERE = Path(__file__).resolve().parent
SR = 48_000


def sisdr(est: np.ndarray, ref: np.ndarray) -> float:
    n = min(len(est), len(ref))
    est, ref = est[:n].astype(np.float64), ref[:n].astype(np.float64)
    a = np.dot(est, ref) / max(np.dot(ref, ref), 1e-20)
    e = est - a * ref
    return float(10 * np.log10(max(np.sum((a * ref) ** 2), 1e-20) / max(np.sum(e**2), 1e-20)))


def load_mono48(path: Path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        from math import gcd

        g = gcd(sr, SR)
        x = resample_poly(x, SR // g, sr // g)
    return x


def insert_gaps(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Returns the gapped signal and the sample index where speech resumes after each gap."""
    hop = SR // 100
    frames = len(x) // hop
    energy = np.array([np.sum(x[i * hop:(i + 1) * hop] ** 2) for i in range(frames)])
    pieces, resumes, pos, out_len = [], [], 0, 0
    while True:
        lo = pos // hop + int(rng.uniform(1.5, 2.5) * 100)
        hi = lo + 100
        if hi >= frames - 100:
            break
        cut = (lo + int(np.argmin(energy[lo:hi]))) * hop
        gap = int(rng.uniform(0.5, 2.0) * SR)
        pieces.append(x[pos:cut])
        pieces.append(np.zeros(gap))
        out_len += (cut - pos) + gap
        resumes.append(out_len)
        pos = cut
    pieces.append(x[pos:])
    return np.concatenate(pieces), resumes


def onset_sisdr(est: np.ndarray, ref: np.ndarray, resumes: list[int]) -> float:
    """SI-SDR over the first 300 ms after every gap, concatenated."""
    n = int(0.3 * SR)
    idx = np.concatenate([np.arange(r, min(r + n, len(ref))) for r in resumes]) if resumes else []
    if len(idx) == 0:
        return float("nan")
    return sisdr(est[idx], ref[idx])


def run(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return r.stdout + r.stderr


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path)
    p.add_argument("--voxsift", required=True)
    p.add_argument("--out", type=Path, default=Path("out/silence"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--beta", default="1")
    p.add_argument("--extra-args", default="")
    p.add_argument("--no-ref", action="store_true", help="skip libdeepfilter (reuse its outputs)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in a.inputs:
        name = path.name.split(".")[0]
        rng = np.random.default_rng([a.seed, sum(map(ord, name))])
        x = load_mono48(path)
        for variant in ("plain", "gaps"):
            if variant == "gaps":
                y, resumes = insert_gaps(x, rng)
            else:
                y, resumes = x, []
            src = a.out / f"{name}__{variant}.wav"
            sf.write(src, y.astype(np.float32), SR, subtype="FLOAT")
            ref_out = a.out / f"{name}__{variant}__libdf.wav"
            if not a.no_ref or not ref_out.exists():
                run([sys.executable, str(HERE / "ref_libdeepfilter.py"), str(src), str(ref_out)])
            vox_out = a.out / f"{name}__{variant}__voxsift.wav"
            run([a.voxsift, "render", str(src), "-o", str(vox_out), "--force", "--beta", a.beta,
                 "--wet", "1", *a.extra_args.split()])
            row = {"file": name, "variant": variant, "gaps": len(resumes),
                   "seconds": round(len(y) / SR, 2)}
            for sys_name, f in (("libdf", ref_out), ("voxsift", vox_out)):
                e = load_mono48(f)
                row[f"{sys_name}_sisdr"] = round(sisdr(e, y), 3)
                row[f"{sys_name}_onset"] = round(onset_sisdr(e, y, resumes), 3)
            row["delta"] = round(row["voxsift_sisdr"] - row["libdf_sisdr"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    per_file = list(rows)
    for variant in ("plain", "gaps"):
        r = [x for x in per_file if x["variant"] == variant]
        mean = {k: round(float(np.nanmean([x[k] for x in r])), 3)
                for k in ("libdf_sisdr", "voxsift_sisdr", "delta", "libdf_onset", "voxsift_onset")}
        worst = min(r, key=lambda x: x["delta"])
        print(f"{variant}: mean {mean}; worst delta {worst['delta']} ({worst['file']})")
        rows.append({"summary": variant, **mean, "worst_delta": worst["delta"], "worst_file": worst["file"]})
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
