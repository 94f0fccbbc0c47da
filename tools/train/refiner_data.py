"""Mixtures for the DFN3 refiner (`cargo xtask train-refiner`, step 1 of 3).

Makes OUT/mix/{train,valid}/NNNN.wav and OUT/speech/{split}/NNNN.wav (48 kHz mono float WAV,
SEG_S seconds)
from the pools of the manifest (`cargo xtask dataset`), split by package as the manifest says,
and OUT/{split}.tsv with each example's sources, SNR and the speech bandwidth. Step 2 runs
`voxsift batch --beta 1 OUT/mix OUT/dfn3` (DFN3's estimates, OUT/dfn3/{split}/NNNN.wav); step 3 trains
on crops of the triples (train_refiner.py).

The refiner needs DFN3's estimate of each mixture, which costs a DFN3 run per mixture, so the
mixtures are drawn once (seeded) rather than on the fly; training draws random crops, gains
and polarity of them on the fly.

Speech bandwidth: the packaged voices are 8 kHz (asterisk prompts) and 16 kHz (festvox LPC)
recordings, so each speaker's bandwidth (0.48 of its recordings' rate, SOURCE_RATE) goes into
the table and the training loss only counts bins below it.
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import crop, reverb, rms, tilt  # noqa: E402

SR = 48000
REVERB_S = 0.4  # the longest reverb (RT60)
SEG_S = 10.0


def load_pools(data, manifest, split):
    """{role: [(who, array)]}: each speaker's (speech) or package's audio, mono, concatenated."""
    with open(manifest) as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["split"] == split]
    groups = {}
    for r in rows:
        groups.setdefault((r["role"], r["speaker"] or r["package"]), []).append(r)
    pools, packages = {}, {}
    for (role, who), rs in sorted(groups.items()):
        packages[who] = rs[0]["package"]
        parts = []
        for r in sorted(rs, key=lambda r: r["path"]):
            x, sr = sf.read(data / r["path"], dtype="float32", always_2d=True)
            if sr != SR:
                sys.exit(f"{r['path']}: {sr} Hz, expected {SR}")
            x = x.mean(1)
            if role == "speech":
                env = np.abs(x) > 1e-3 * (np.abs(x).max() + 1e-9)
                idx = np.flatnonzero(env)
                if idx.size == 0:
                    continue
                x = x[max(idx[0] - 2400, 0) : idx[-1] + 2400]
                parts.append(np.zeros(int(0.2 * SR), np.float32))
            parts.append(x / (np.sqrt(np.mean(x**2)) + 1e-6) * 0.1)
        if parts:
            pools.setdefault(role, []).append((who, np.concatenate(parts).astype(np.float32)))
    return pools, packages


# Sample rate of each speech package's own recordings (before decoding to 48 kHz): the speech
# has nothing above 0.48 of it. Asterisk prompts are 8 kHz telephone recordings, the festvox
# LPC diphone voices 16 kHz; the HTS voice renders at 48 kHz.
SOURCE_RATE = {
    "asterisk-prompt-": 8000,
    "festvox-kallpc16k": 16000,
    "festvox-kdlpc16k": 16000,
    "festvox-us-slt-hts": 48000,
}


def bandwidth(package):
    """Speech bandwidth (Hz) of a speech package, from its recordings' sample rate."""
    for prefix, rate in SOURCE_RATE.items():
        if package.startswith(prefix):
            return 0.48 * rate
    sys.exit(f"refiner_data.py: no source rate known for speech package {package} (SOURCE_RATE)")


def example(rng, pools, seg):
    """(mix, speech, row): 80 % speech + music/noise, 10 % speech only, 10 % music only."""
    kind = rng.random()
    speech = np.zeros(seg, np.float32)
    other = np.zeros(seg, np.float32)
    row = {"speaker": "", "music": "", "snr_db": ""}
    if kind < 0.9:
        who, arr = pools["speech"][rng.integers(len(pools["speech"]))]
        row["speaker"] = who
        speech = crop(rng, arr, seg)
        if rng.random() < 0.25:
            speech = reverb(rng, speech, SR, REVERB_S)
        if rng.random() < 0.5:
            speech = tilt(rng, speech, SR)
    if kind > 0.1:
        role = "noise" if ("noise" in pools and rng.random() < 0.15) else "music"
        who, arr = pools[role][rng.integers(len(pools[role]))]
        row["music"] = who
        other = crop(rng, arr, seg)
        if rng.random() < 0.5:
            other = tilt(rng, other, SR)
        if rng.random() < 0.2:
            other = reverb(rng, other, SR, REVERB_S)
        if rng.random() < 0.3:
            who, arr = pools["music"][rng.integers(len(pools["music"]))]
            other = other + crop(rng, arr, seg) * rng.uniform(0.3, 1.0)
            row["music"] += "+" + who
    if rms(speech) > 1e-5 and rms(other) > 1e-5:
        snr = rng.uniform(-10, 15)
        other = other * (rms(speech) / rms(other)) / 10 ** (snr / 20)
        row["snr_db"] = f"{snr:.2f}"
    mix = speech + other
    g = 10 ** (rng.uniform(-25, -1) / 20) / (np.abs(mix).max() + 1e-6)
    return (mix * g).astype(np.float32), (speech * g).astype(np.float32), row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--valid", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    seg = int(SEG_S * SR)
    for split, n, seed in [("train", a.train, a.seed), ("valid", a.valid, a.seed + 1000)]:
        pools, packages = load_pools(a.data, a.manifest, split)
        bw = {who: bandwidth(packages[who]) for who, _ in pools["speech"]}
        for role, items in pools.items():
            h = sum(len(x) for _, x in items) / SR / 3600
            print(f"{split} {role}: {len(items)} groups, {h:.2f} h", flush=True)
        print(f"{split} speech bandwidth (Hz): {bw}", flush=True)
        dm, ds = a.out / "mix" / split, a.out / "speech" / split
        dm.mkdir(parents=True, exist_ok=True)
        ds.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        rows = []
        for i in range(n):
            mix, speech, row = example(rng, pools, seg)
            sf.write(dm / f"{i:04d}.wav", mix, SR, subtype="FLOAT")
            sf.write(ds / f"{i:04d}.wav", speech, SR, subtype="FLOAT")
            row = {"id": f"{i:04d}", **row, "bandwidth_hz": f"{bw.get(row['speaker'], 0.0):.0f}"}
            rows.append(row)
        with open(a.out / f"{split}.tsv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
