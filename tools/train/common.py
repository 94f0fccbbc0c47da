"""Shared helpers of the training tools (train.py, refiner_data.py, train_refiner.py, model.py,
refiner.py, export.py, export_refiner.py, and testkit/fixtures/identity-refiner/make.py):
augmentation, the DFT basis, the checkpointed training loop, the ONNX check and the model.toml
writer.

torch and onnxruntime are imported where they are used: make.py imports this module for
model_toml with the Python of .venv-xtask/, which has no torch.
"""

import csv
import math
import sys

import numpy as np

# Augmentation (the rng is a numpy Generator; arrays are float32 mono).


def crop(rng, arr, n):
    """A random n-sample excerpt of arr (tiled first if it is not longer than n)."""
    if len(arr) <= n:
        arr = np.tile(arr, n // len(arr) + 1)
    s = rng.integers(0, len(arr) - n)
    return arr[s : s + n].copy()


def tilt(rng, x, sr):
    """A random EQ tilt, -4..+4 dB per octave around 1 kHz (gain at most 8), applied by FFT."""
    db = rng.uniform(-4, 4)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / sr)
    g = 10 ** (db * np.log2(np.maximum(f, 50) / 1000) / 20)
    return np.fft.irfft(spec * np.minimum(g, 8), len(x)).astype(np.float32)


def reverb(rng, x, sr, max_rt):
    """x through a random short reverb: decaying noise, RT60 0.1..max_rt s, after a direct path."""
    rt = rng.uniform(0.1, max_rt)
    n = int(rt * sr)
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt)
    ir[0] = 1.0 / rng.uniform(0.3, 1.0)
    ir /= np.sqrt(np.sum(ir**2))
    y = np.fft.irfft(np.fft.rfft(x, len(x) + n) * np.fft.rfft(ir, len(x) + n))[: len(x)]
    return y.astype(np.float32)


def rms(x):
    """Root mean square of x (plus 1e-12 under the root), as a Python float."""
    return float(np.sqrt(np.mean(x**2) + 1e-12))


# The STFT as convolutions.


def sqrt_hann(n_fft):
    """The periodic sqrt-Hann window of n_fft samples, float64 [n_fft]."""
    import torch

    n = torch.arange(n_fft, dtype=torch.float64)
    return torch.sqrt(0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft))


def dft_basis(n_fft, bins):
    """float64 analysis kernels [2 bins, 1, n_fft] (cos, then -sin, times sqrt_hann) of the first
    `bins` DFT bins, and the per-kernel scale [2 bins] that makes them the synthesis kernels."""
    import torch

    win = sqrt_hann(n_fft)
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    ang = 2 * math.pi * k * n / n_fft
    analysis = torch.cat([torch.cos(ang) * win, -torch.sin(ang) * win], 0)[:, None, :]
    # Inverse real DFT: bins 1..N/2-1 count twice, bin 0 and the Nyquist bin (if included) once;
    # sqrt-Hann analysis x synthesis = Hann, which overlap-adds to 2 at hop N/4.
    c = torch.full((bins,), 2.0, dtype=torch.float64)
    c[0] = 1.0
    if bins > n_fft // 2:
        c[n_fft // 2] = 1.0
    return analysis, torch.cat([c, c]) / n_fft / 2.0


# The training loop: RUN/checkpoint.pt every epoch (a run resumes from it), RUN/log.csv and
# RUN/curves.png.


def resume(ck, model, opt, rng, check=None):
    """Loads checkpoint ck, if it exists, into model, opt and the RNGs (check(state) may refuse
    it first): (log, epoch, best, elapsed seconds), or those of a fresh start."""
    import torch

    if not ck.exists():
        return [], 0, -1e9, 0.0
    st = torch.load(ck, weights_only=False)
    if check is not None:
        check(st)
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["opt"])
    log, epoch, best, elapsed = st["log"], st["epoch"], st["best"], st["elapsed"]
    rng.bit_generator.state = st["rng"]
    torch.set_rng_state(st["torch_rng"])
    print(f"resumed at epoch {epoch} ({elapsed / 60:.1f} min)", flush=True)
    return log, epoch, best, elapsed


def train_epoch(model, opt, steps, step_loss):
    """`steps` optimiser steps on step_loss() (a new batch's loss), gradients clipped to norm 5:
    the mean loss."""
    import torch

    model.train()
    losses = []
    for _ in range(steps):
        loss = step_loss()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def save_checkpoint(ck, model, opt, rng, log, epoch, best, elapsed, extra=None):
    """Writes the checkpoint that resume() reads; extra: more entries, after the model's."""
    import torch

    torch.save(
        {
            "model": model.state_dict(),
            **(extra or {}),
            "opt": opt.state_dict(),
            "log": log,
            "epoch": epoch,
            "best": best,
            "elapsed": elapsed,
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        },
        ck,
    )


def write_log(run, log, curves, ylabel):
    """Writes RUN/log.csv (the rows of log) and RUN/curves.png (see plot)."""
    with open(run / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(log[-1]))
        w.writeheader()
        w.writerows(log)
    plot(log, run / "curves.png", curves, ylabel)


def plot(log, path, curves, ylabel):
    """PNG: the train loss, and the validation curves [(column, label, *fmt)] under ylabel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in log]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(ep, [r["train_loss"] for r in log])
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("train loss (thresholded -SDR, dB)")
    for column, label, *fmt in curves:
        ax[1].plot(ep, [r[column] for r in log], *fmt, label=label)
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel(ylabel)
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# Export.


def check_onnx(path, model, signals, names, lengths, tol):
    """Runs the graph at path (ONNX Runtime, CPU) and the torch model on signals(n) (one array
    per input of `names`) for each n of lengths; exits if they differ by more than tol of the
    output's peak: {n: (max |graph - torch|, that over max |torch|)}."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    errors = {}
    for n in lengths:
        xs = signals(n)
        with torch.no_grad():
            ref = model(*(torch.from_numpy(x) for x in xs)).numpy()
        got = sess.run(None, dict(zip(names, xs)))[0]
        err = float(np.abs(got - ref).max())
        rel = err / float(np.abs(ref).max() + 1e-12)
        errors[n] = (err, rel)
        print(f"graph vs torch, {n} samples: {err:.3g} ({rel:.3g} of peak)")
        if not rel <= tol:
            sys.exit(f"export: the graph differs from torch by {rel:.3g} of the peak at {n} samples")
    return errors


def errors_toml(errors):
    """reference.toml's [errors] table, from check_onnx's errors."""
    return (
        "[errors]\n"
        'note = "max |graph - torch| and that over max |torch|, measured when exported"\n'
        + "".join(
            f'"graph vs torch forward, {n} samples" = [{e:.3g}, {r:.3g}]\n'
            for n, (e, r) in errors.items()
        )
    )


# The comments the exporters write above model.toml keys and tables (the test fixture has none).
NOTES = {
    "version": "changes whenever the weights or the graph change (for cache keys)",
    "window": "samples per run (the graph's fixed time axis); 0 = any length >= min_window",
    "schedule": "defaults for windowed streaming (the runtime can override them)",
}


def _toml(v):
    # Strings as they are, in quotes (the values here need no escapes).
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)


def model_toml(
    title,
    *,
    name,
    version,
    architecture,
    sha256,
    sample_rate,
    min_window,
    schedule,
    inputs,
    provenance,
    config=None,
    mask=None,
    notes=None,
):
    """The text of the model.toml of a mono `waveform` model.onnx whose output is `speech`, any
    length; inputs: [(name, kind)]; notes: {key or table: comment above it}."""
    notes = notes or {}
    lines = [f"# {title}"]

    def table(header, entries):
        lines.append("")
        if header is not None:
            lines.extend(f"# {c}" for c in notes.get(header.strip("[]"), "").splitlines())
            lines.append(header)
        for k, v in entries.items():
            if header is None:
                lines.extend(f"# {c}" for c in notes.get(k, "").splitlines())
            lines.append(f"{k} = {_toml(v)}")

    top = {
        "format": 1,
        "name": name,
        "version": version,
        "architecture": architecture,
        "kind": "waveform",
        "file": "model.onnx",
        "sha256": sha256,
        "sample_rate": sample_rate,
        "channels": 1,
        "sources": ["speech"],
        "speech": "speech",
        "window": 0,
        "min_window": min_window,
    }
    if mask is not None:
        top["mask"] = mask
    table(None, top)
    table("[schedule]", schedule)
    tensor = {"shape": [1, 1, -1], "layout": "batch, channel, sample"}
    for n, kind in inputs:
        table("[[input]]", {"name": n, "kind": kind, **tensor})
    table("[[output]]", {"name": "speech", "kind": "waveform", **tensor})
    table("[provenance]", provenance)
    if config is not None:
        table("[provenance.config]", config)
    return "\n".join(lines) + "\n"
