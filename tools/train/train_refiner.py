"""Trains the DFN3 refiner (`cargo xtask train-refiner`, step 3 of 3).

Reads the triples of refiner_data.py and `voxsift batch` (DATA/{mix,speech,dfn3}/{train,valid}/
NNNN.wav) and trains on random crops of them. Writes
RUN/checkpoint.pt (every epoch; a run resumes from it), RUN/best.pt (best validation score),
RUN/log.csv and RUN/curves.png. Seeds are fixed; two threads by default.

Loss and validation are computed on the refiner's own low-band spectrum (the bins below
`refiner.CUTOFF_HZ`, and below each example's speech bandwidth): the thresholded SDR of the
estimate against the speech (with no speech, the estimate's level against the mixture's).
Validation reports the spectral SI-SDR of the model, of DFN3 alone and of the mixture over the
same bins (examples with speech), and the leak (output level against the mixture, dB) of
the model and of DFN3 on the music-only examples.
"""

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refiner as R  # noqa: E402
from common import resume, save_checkpoint, train_epoch, write_log  # noqa: E402

SKIP = int(0.5 * R.SAMPLE_RATE)  # DFN3 starts cold at each file's start: not trained on
CURVES = [("valid_si_sdr", "refiner"), ("valid_dfn3_si_sdr", "DFN3 alone", "--")]


def load_split(data, split):
    rows = list(csv.DictReader(open(data / f"{split}.tsv"), delimiter="\t"))
    out = []
    for r in rows:
        trip = []
        for part in ["mix", "speech", "dfn3"]:
            x, sr = sf.read(data / part / split / f"{r['id']}.wav", dtype="float32", always_2d=True)
            assert sr == R.SAMPLE_RATE, (r, sr)
            trip.append(x.mean(1))
        n = min(len(t) for t in trip)
        bw = float(r["bandwidth_hz"]) if r["speaker"] else R.CUTOFF_HZ
        out.append((np.stack([t[:n] for t in trip]), bw))
    return out


def band_mask(bws, device=None):
    """[B, K, 1] weights: 1 for bins below each example's bandwidth."""
    f = torch.arange(R.BINS, dtype=torch.float32) * R.SAMPLE_RATE / R.N_FFT
    return (f[None, :] < torch.tensor(bws, dtype=torch.float32)[:, None]).float()[..., None]


def batch(rng, items, n, seg):
    xs, bws = [], []
    for _ in range(n):
        trip, bw = items[rng.integers(len(items))]
        s = rng.integers(SKIP, trip.shape[1] - seg)
        x = trip[:, s : s + seg] * (10 ** (rng.uniform(-6, 6) / 20)) * rng.choice([-1.0, 1.0])
        xs.append(x)
        bws.append(bw)
    x = torch.from_numpy(np.stack(xs).astype(np.float32))  # [B, 3, T]
    return x[:, 0:1], x[:, 1:2], x[:, 2:3], bws


def spec_sdr_terms(model, est_spec, speech, bws):
    sr, si = model.spec(speech, export=False)
    yr, yi = est_spec
    w = band_mask(bws)
    e = (((sr - yr) ** 2 + (si - yi) ** 2) * w).sum((1, 2))
    s = ((sr**2 + si**2) * w).sum((1, 2))
    return e, s, (yr, yi, sr, si, w)


def loss_fn(model, est_spec, speech, mix, bws, tau=1e-3):
    e, s, _ = spec_sdr_terms(model, est_spec, speech, bws)
    xr, xi = model.spec(mix, export=False)
    m = ((xr**2 + xi**2) * band_mask(bws)).sum((1, 2))
    return (10 * torch.log10(e + tau * m + 1e-10) - 10 * torch.log10(s + tau * m + 1e-10)).mean()


def si_sdr_spec(yr, yi, sr, si, w):
    """Scale-invariant SDR over the weighted bins of complex spectra, per example."""
    dot = ((yr * sr + yi * si) * w).sum((1, 2))
    ss = ((sr**2 + si**2) * w).sum((1, 2)) + 1e-12
    a = dot / ss
    tr, ti = a[:, None, None] * sr, a[:, None, None] * si
    num = ((tr**2 + ti**2) * w).sum((1, 2))
    den = (((yr - tr) ** 2 + (yi - ti) ** 2) * w).sum((1, 2)) + 1e-12
    return 10 * torch.log10(num / den + 1e-12)


@torch.no_grad()
def validate(model, items):
    scores = {"model": [], "dfn3": [], "mix": []}
    leak = {"model": [], "dfn3": []}
    for trip, bw in items:
        x = torch.from_numpy(trip[:, SKIP:].astype(np.float32))[:, None]  # [3, 1, T]
        mix, speech, dfn3 = x[0:1], x[1:2], x[2:3]
        _, (yr, yi) = model(mix, dfn3, with_spec=True)
        w = band_mask([bw])
        sr, si = model.spec(speech, export=False)
        dr, di = model.spec(dfn3, export=False)
        xr, xi = model.spec(mix, export=False)
        if float((speech**2).sum()) > 1e-8:
            scores["model"].append(float(si_sdr_spec(yr, yi, sr, si, w)))
            scores["dfn3"].append(float(si_sdr_spec(dr, di, sr, si, w)))
            scores["mix"].append(float(si_sdr_spec(xr, xi, sr, si, w)))
        else:
            m = float(((xr**2 + xi**2) * w).sum()) + 1e-12
            leak["model"].append(10 * np.log10(float(((yr**2 + yi**2) * w).sum()) / m + 1e-12))
            leak["dfn3"].append(10 * np.log10(float(((dr**2 + di**2) * w).sum()) / m + 1e-12))
    return {k: float(np.mean(v)) for k, v in scores.items()}, {
        k: float(np.mean(v)) if v else float("nan") for k, v in leak.items()
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", choices=R.VARIANTS, default="mix")
    ap.add_argument(
        "--tau",
        type=float,
        default=1e-4,
        help="loss threshold, relative to the mix energy (1e-4: SDR and leak count to 40 dB)",
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    a.run.mkdir(parents=True, exist_ok=True)
    train = load_split(a.data, "train")
    valid = load_split(a.data, "valid")
    print(f"train {len(train)} examples, valid {len(valid)}", flush=True)
    seg = int(a.seconds * R.SAMPLE_RATE)

    model = R.Refiner(variant=a.variant)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    ck = a.run / "checkpoint.pt"
    rng = np.random.default_rng(a.seed)

    def same_variant(st):
        if st.get("variant", "mix") != a.variant:
            raise SystemExit(f"{ck} holds a {st.get('variant', 'mix')!r} model, not {a.variant!r}")

    fresh = not ck.exists()
    log, epoch, best, elapsed = resume(ck, model, opt, rng, check=same_variant)
    if fresh:
        model.eval()
        v, lk = validate(model, valid)
        print(f"untrained: {v} leak {lk}", flush=True)
    print(f"parameters: {sum(p.numel() for p in model.parameters())}", flush=True)
    t0 = time.time() - elapsed

    def step_loss():
        mix, speech, dfn3, bws = batch(rng, train, a.batch, seg)
        _, est_spec = model(mix, dfn3, with_spec=True)
        return loss_fn(model, est_spec, speech, mix, bws, tau=a.tau)

    while time.time() - t0 < a.minutes * 60:
        train_loss = train_epoch(model, opt, a.steps_per_epoch, step_loss)
        epoch += 1
        model.eval()
        v, lk = validate(model, valid)
        row = {
            "epoch": epoch,
            "step": epoch * a.steps_per_epoch,
            "minutes": round((time.time() - t0) / 60, 2),
            "train_loss": round(train_loss, 4),
            "valid_si_sdr": round(v["model"], 3),
            "valid_dfn3_si_sdr": round(v["dfn3"], 3),
            "valid_mix_si_sdr": round(v["mix"], 3),
            "valid_leak_db": round(lk["model"], 2),
            "valid_dfn3_leak_db": round(lk["dfn3"], 2),
        }
        log.append(row)
        print(row, flush=True)
        if v["model"] > best:
            best = v["model"]
            torch.save(
                {"model": model.state_dict(), "epoch": epoch, "valid": row, "variant": a.variant},
                a.run / "best.pt",
            )
        save_checkpoint(
            ck, model, opt, rng, log, epoch, best, time.time() - t0, extra={"variant": a.variant}
        )
        write_log(a.run, log, CURVES, "validation SI-SDR, bins < 8 kHz (dB)")
    print(f"done: {epoch} epochs, best validation SI-SDR {best:.2f} dB")


if __name__ == "__main__":
    main()
