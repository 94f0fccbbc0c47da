"""Trains vsep-small on mixtures made on the fly from the manifest (`cargo xtask train`).

Writes RUN/checkpoint.pt (every epoch; a run resumes from it), RUN/best.pt (best validation
SI-SDR), RUN/log.csv (epoch, step, minutes, train loss, validation SI-SDR and its gain over the
mixture) and RUN/curves.png. Seeds are fixed; two threads.
"""

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import crop, reverb, rms, tilt  # noqa: E402
from common import resume, save_checkpoint, train_epoch, write_log  # noqa: E402
from model import SAMPLE_RATE, VSep  # noqa: E402

SEG = 4 * SAMPLE_RATE
REVERB_S = 0.5  # the longest reverb (RT60)
CURVES = [("valid_si_sdr", "model"), ("valid_mix_si_sdr", "mixture", "--")]


def load_pool(data, manifest, split):
    """{role: [(speaker or package, array at 16 kHz, mono)]}, concatenated per speaker/package."""
    cache = data / "cache16k"
    cache.mkdir(parents=True, exist_ok=True)
    groups = {}
    with open(manifest) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for r in rows:
        if r["split"] != split:
            continue
        key = (r["role"], r["speaker"] or r["package"])
        groups.setdefault(key, []).append(r)
    pool = {}
    for (role, who), rs in sorted(groups.items()):
        npy = cache / f"{split}-{role}-{who}.npy"
        if npy.exists():
            arr = np.load(npy)
        else:
            parts = []
            for r in rs:
                x, sr = sf.read(data / r["path"], dtype="float32", always_2d=True)
                assert sr == 48000
                x = resample_poly(x.mean(1), 1, 3).astype(np.float32)
                if role == "speech":
                    # Trim leading/trailing silence (prompts have long edges).
                    env = np.abs(x) > 1e-3 * (np.abs(x).max() + 1e-9)
                    idx = np.flatnonzero(env)
                    if idx.size == 0:
                        continue
                    x = x[max(idx[0] - 800, 0) : idx[-1] + 800]
                    parts.append(np.zeros(int(0.15 * SAMPLE_RATE), np.float32))
                parts.append(x / (np.sqrt(np.mean(x**2)) + 1e-6) * 0.1)
            arr = np.concatenate(parts)
            np.save(npy, arr)
        pool.setdefault(role, []).append((who, arr))
    return pool


def example(rng, pool):
    """(mixture, speech) at 16 kHz, SEG samples."""
    kind = rng.random()
    speech = np.zeros(SEG, np.float32)
    other = np.zeros(SEG, np.float32)
    if kind < 0.85:  # speech present
        who, arr = pool["speech"][rng.integers(len(pool["speech"]))]
        speech = crop(rng, arr, SEG)
        if rng.random() < 0.3:
            speech = reverb(rng, speech, SAMPLE_RATE, REVERB_S)
        if rng.random() < 0.5:
            speech = tilt(rng, speech, SAMPLE_RATE)
    if kind > 0.1:  # music (or some noise) present
        role = "noise" if ("noise" in pool and rng.random() < 0.15) else "music"
        who, arr = pool[role][rng.integers(len(pool[role]))]
        other = crop(rng, arr, SEG)
        if rng.random() < 0.5:
            other = tilt(rng, other, SAMPLE_RATE)
        if rng.random() < 0.3:  # a second music excerpt on top
            who, arr = pool["music"][rng.integers(len(pool["music"]))]
            other = other + crop(rng, arr, SEG) * rng.uniform(0.3, 1.0)
    if rms(speech) > 1e-6 and rms(other) > 1e-6:
        snr = rng.uniform(-10, 15)
        other = other * (rms(speech) / rms(other)) / 10 ** (snr / 20)
    mix = speech + other
    g = 10 ** (rng.uniform(-30, 0) / 20) / (np.abs(mix).max() + 1e-6)
    return (mix * g).astype(np.float32), (speech * g).astype(np.float32)


def batch(rng, pool, n):
    m, s = zip(*(example(rng, pool) for _ in range(n)))
    return torch.from_numpy(np.stack(m))[:, None], torch.from_numpy(np.stack(s))[:, None]


def loss_fn(est, speech, mix, tau=1e-3):
    """Thresholded SDR: 10 log10(|s - est|^2 + tau |mix|^2) - 10 log10(|s|^2 + tau |mix|^2);
    with no speech it pushes the output down to -30 dB of the mixture."""
    e = ((speech - est) ** 2).sum(-1)
    s = (speech**2).sum(-1)
    m = (mix**2).sum(-1)
    return (10 * torch.log10(e + tau * m + 1e-10) - 10 * torch.log10(s + tau * m + 1e-10)).mean()


def si_sdr(est, ref):
    ref = ref - ref.mean(-1, keepdims=True)
    est = est - est.mean(-1, keepdims=True)
    a = (est * ref).sum(-1, keepdims=True) / ((ref**2).sum(-1, keepdims=True) + 1e-10)
    t = a * ref
    return 10 * np.log10(((t**2).sum(-1) + 1e-10) / (((est - t) ** 2).sum(-1) + 1e-10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=45)
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    a.run.mkdir(parents=True, exist_ok=True)

    train = load_pool(a.data, a.manifest, "train")
    valid = load_pool(a.data, a.manifest, "valid")
    for name, p in [("train", train), ("valid", valid)]:
        for role, items in p.items():
            h = sum(len(x) for _, x in items) / SAMPLE_RATE / 3600
            print(f"{name} {role}: {len(items)} groups, {h:.2f} h", flush=True)
    vrng = np.random.default_rng(1234)
    vpool = {"speech": valid["speech"], "music": valid["music"]}
    vm, vs = [], []
    while len(vm) < 48:
        m, s = example(vrng, vpool)
        if rms(s) > 1e-6 and rms(m - s) > 1e-6:
            vm.append(m)
            vs.append(s)
    vm = torch.from_numpy(np.stack(vm))[:, None]
    vs = np.stack(vs)
    mix_sdr = float(np.mean(si_sdr(vm[:, 0].numpy(), vs)))

    model = VSep()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    ck = a.run / "checkpoint.pt"
    rng = np.random.default_rng(a.seed)
    log, epoch, best, elapsed = resume(ck, model, opt, rng)
    params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {params}", flush=True)
    t0 = time.time() - elapsed

    def step_loss():
        m, s = batch(rng, train, a.batch)
        return loss_fn(model(m), s, m)

    while time.time() - t0 < a.minutes * 60:
        train_loss = train_epoch(model, opt, a.steps_per_epoch, step_loss)
        epoch += 1
        model.eval()
        with torch.no_grad():
            est = torch.cat([model(vm[i : i + 8]) for i in range(0, len(vm), 8)])[:, 0].numpy()
        v = float(np.mean(si_sdr(est, vs)))
        row = {
            "epoch": epoch,
            "step": epoch * a.steps_per_epoch,
            "minutes": round((time.time() - t0) / 60, 2),
            "train_loss": round(train_loss, 4),
            "valid_si_sdr": round(v, 3),
            "valid_mix_si_sdr": round(mix_sdr, 3),
        }
        log.append(row)
        print(row, flush=True)
        if v > best:
            best = v
            torch.save({"model": model.state_dict(), "epoch": epoch, "valid_si_sdr": v}, a.run / "best.pt")
        save_checkpoint(ck, model, opt, rng, log, epoch, best, time.time() - t0)
        write_log(a.run, log, CURVES, "validation SI-SDR (dB)")
    print(f"done: {epoch} epochs, best validation SI-SDR {best:.2f} dB (mixture {mix_sdr:.2f} dB)")


if __name__ == "__main__":
    main()
