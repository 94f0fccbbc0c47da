"""Export the Demucs speech denoiser (`denoiser` 0.1.5: `dns64`, `master64`) to ONNX, with
model.toml, PROVENANCE.md, LICENSE and reference vectors.

Run by `cargo xtask export-model dns64|master64 [--random-init] [--out DIR] [--window-s S]` in
the venv it makes (.venv-export/). See docs/models.md.

The graph is `denoiser.demucs.Demucs.forward` unchanged: `mix` [1, 1, T] at 16 kHz in,
`speech` [1, 1, T] out. Its time axis is dynamic (any T >= min_window) unless --window-s
fixes it. For that, `valid_length` (the padding to a length the strided convolutions use
whole) is replaced on the instance by the same formula in integer arithmetic, which the
exporter can keep symbolic; the original's math.ceil over floats would be traced as the
constant of the example length.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import export_common as ec

SR = 16000
TINY = dict(chin=1, chout=1, hidden=4, depth=5, kernel_size=8, stride=4, causal=True, resample=4,
            growth=2, normalize=True, glu=True, rescale=0.1, floor=1e-3, sample_rate=SR)
INPUT_SECONDS = 4.0
WINDOW_MS, STEP_MS, LOOKAHEAD_MS = 1000, 250, 64
LENGTHS = (16000, 12345, 48000, 4097, 1025, 160000)  # checked on a dynamic axis


def symbolic_valid_length(model):
    """Demucs.valid_length with integer ceil divisions (-(-a // b)), equal to the original for
    every length >= min_valid_length(model)."""

    def valid_length(length):
        n = length * model.resample
        for _ in range(model.depth):
            n = (n - model.kernel_size + model.stride - 1) // model.stride + 1
        for _ in range(model.depth):
            n = (n - 1) * model.stride + model.kernel_size
        return (n + model.resample - 1) // model.resample

    return valid_length


def min_valid_length(model, upto=1 << 17):
    """The smallest length from which the integer formula always matches the original (below
    it the original clamps an inner length to 1)."""
    from denoiser.demucs import Demucs

    f = symbolic_valid_length(model)
    last_bad = 0
    for n in range(1, upto):
        if f(n) != Demucs.valid_length(model, n):
            last_bad = n
    return last_bad + 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=["dns64", "master64"])
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--window-s", type=float, default=None)
    p.add_argument("--weights", type=Path, default=None,
                   help="the pretrained state dict (.th) instead of downloading it")
    args = p.parse_args()
    from denoiser import pretrained
    from denoiser.demucs import Demucs

    if args.random_init:
        torch.manual_seed(args.seed)
        model = Demucs(**TINY)
        weights_id = f"random-init-seed{args.seed}"
        weights_desc = f"random initialisation (torch.manual_seed({args.seed}), denoiser defaults)"
        display = "denoiser-tiny"
    else:
        url = {"dns64": pretrained.DNS_64_URL, "master64": pretrained.MASTER_64_URL}[args.name]
        sig = url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if args.weights is not None:
            model = getattr(pretrained, args.name)(pretrained=False)
            try:
                model.load_state_dict(torch.load(args.weights, map_location="cpu"))
            except Exception as e:  # noqa: BLE001
                ec.fail(f"cannot load {args.name}'s weights from {args.weights}: {e}")
            sig = args.weights.stem
            weights_desc = f"pretrained {args.name} (read from {args.weights.name}; {url})"
        else:
            try:
                model = getattr(pretrained, args.name)(pretrained=True)
            except Exception as e:  # noqa: BLE001 - any download failure ends the same way
                print(
                    f"error: could not download the pretrained weights of {args.name} ({url}): "
                    f"{type(e).__name__}: {e}\nThis needs internet access (or a filled torch "
                    "hub cache, or --weights FILE); pass --random-init for the small random "
                    "model instead.",
                    file=sys.stderr,
                )
                sys.exit(ec.EXIT_NO_WEIGHTS)
            weights_desc = f"pretrained {args.name} ({url})"
        weights_id = sig
        display = args.name
    model.eval()
    if model.sample_rate != SR or model.chin != 1 or model.chout != 1:
        ec.fail("expected a mono 16 kHz model")
    min_window = min_valid_length(model)
    model.valid_length = symbolic_valid_length(model)

    window = 0 if args.window_s is None else int(round(args.window_s * SR))
    if window and window < min_window:
        ec.fail(f"--window-s must give at least {min_window} samples")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"

    total = int(INPUT_SECONDS * SR)
    mix = ec.test_signal(1, total, SR, args.seed)
    example = mix[:, : (window or SR)][None]
    dynamic = None
    if not window:
        dynamic = ({2: torch.export.Dim("T", min=min_window)},)
    axis = f"window {window} samples" if window else "dynamic time axis"
    print(f"exporting {display}: {axis}")
    t0 = time.time()
    ops = ec.export_onnx(model, (torch.from_numpy(example),), onnx_path, ["mix"], ["speech"],
                         dynamic_shapes=dynamic)
    print(f"exported in {time.time() - t0:.1f} s: {onnx_path} ({onnx_path.stat().st_size} bytes)")

    sess = ec.ort_session(onnx_path)

    def graph(x):
        """x [1, n] -> [1, n] through the graph (zero-padded to the window when fixed)."""
        n = x.shape[-1]
        if window:
            xp = np.zeros((1, 1, window), dtype=np.float32)
            xp[0, :, :n] = x
        else:
            xp = x[None].astype(np.float32)
        return sess.run(None, {"mix": xp})[0][0, :, :n]

    def torch_fwd(x):
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(x))[None])[0].numpy()

    tol = 1e-4
    checks = {}
    lengths = [window] if window else sorted(set(LENGTHS + (min_window, total)))
    rng = np.random.default_rng(args.seed + 1)
    for n in lengths:
        x = mix[:, :n] if n <= total else (0.1 * rng.standard_normal((1, n))).astype(np.float32)
        checks[f"graph vs torch forward, {n} samples"] = ec.max_err(graph(x), torch_fwd(x))
    ok = True
    for what, (a, r) in checks.items():
        flag = "ok" if r < tol else "FAIL"
        ok &= r < tol
        print(f"  {flag:4} {what}: max abs {a:.3g}, relative to peak {r:.3g}")

    # Full file (one run of the whole input) and the default schedule with hard cuts.
    run_window = window or int(WINDOW_MS * SR / 1000)
    step = int(STEP_MS * SR / 1000)
    lookahead = int(LOOKAHEAD_MS * SR / 1000)
    full = torch_fwd(mix)
    streamed = np.zeros_like(mix)
    for start in range(0, total, step):
        end = start + step + lookahead
        a = end - run_window
        x = np.zeros((1, run_window), dtype=np.float32)
        lo, hi = max(a, 0), min(end, total)
        x[:, lo - a : hi - a] = mix[:, lo:hi]
        y = graph(x)
        keep = min(step, total - start)
        streamed[:, start : start + keep] = y[:, start - a : start - a + keep]
    err_stream = ec.max_err(streamed, full)
    snr_stream = ec.snr_db(streamed, full)
    print(f"  info streamed (window {run_window}, step {step}, lookahead {lookahead}, no fades) "
          f"vs one run on {total} samples: max abs {err_stream[0]:.3g}, relative "
          f"{err_stream[1]:.3g}, SNR {snr_stream:.1f} dB")
    if not ok:
        ec.fail(f"the exported graph does not reproduce the torch model within {tol}")

    ref = ec.Refs(out / "reference")
    ref.write("mix", mix, f"input [1, samples]: test_signal(channels=1, seed={args.seed})")
    ref.write("window0_forward", torch_fwd(mix[:, :run_window]),
              f"torch forward on mix[:, :{run_window}] (one window): [1, {run_window}]")
    if window:
        ref.write("full_file", full, "torch forward on the whole of mix in one run (the graph's "
                  "window is fixed, so only torch can do this): [1, samples]")
    else:
        ref.write("full_file", graph(mix), "the graph on the whole of mix in one run (equal to "
                  "torch's forward within the errors below): [1, samples]")
    ref.write("streamed", streamed, "the graph run as the default schedule (see streamed_how): "
              "[1, samples]")

    import onnx
    import onnxruntime

    vers = ec.versions("torch", "denoiser", "onnx", "onnxscript", "onnxruntime", "numpy")
    ec.write_toml(
        out / "reference" / "reference.toml",
        {
            "model": display,
            "format": "raw little-endian float32, C order (last axis fastest), no header",
            "sample_rate": SR,
            "window": window,
            "input": (
                "0.3 sin(2 pi 220 t) + 0.1 (0.5 + 0.5 sin(2 pi 3 t)) sin(2 pi 1000 t) + "
                f"0.05 N(0, 1) (numpy default_rng({args.seed}))"
            ),
            "streamed_how": (
                f"run k (k = 0, 1, ...) feeds the graph mix[:, k*{step} + {step + lookahead} - "
                f"{run_window} : k*{step} + {step + lookahead}] (zeros before sample 0 and after "
                f"the end) and keeps its output samples [{run_window - step - lookahead}, "
                f"{run_window - lookahead}) as output samples [k*{step}, k*{step} + {step}); "
                "no cross-fade"
            ),
            "streamed_note": (
                "each run normalises by its own window's standard deviation and starts its LSTM "
                "from zero, so streamed differs from full_file (see errors); compare a "
                "streaming implementation with streamed exactly and with full_file loosely"
            ),
            "generated_with": vers,
            "file": ref.files,
            "errors": {
                "note": "max |a - b| and that over max |b|, measured when exported",
                **{k: [float(f"{x:.3g}") for x in v] for k, v in checks.items()},
                "streamed_vs_full_file": [float(f"{x:.3g}") for x in err_stream],
                "streamed_vs_full_file_snr_db": round(snr_stream, 2),
            },
        },
        header=f"Reference vectors for {display}, written by tools/export/export_denoiser.py.",
    )

    sha = ec.sha256(onnx_path)
    ms = lambda n: int(round(1000 * n / SR))  # noqa: E731
    cfg = ec.jsonable(getattr(model, "_init_args_kwargs", ((), {}))[1])
    shape = [1, 1, window or -1]
    doc = {
        "format": 1,
        "name": display,
        "version": f"{weights_id}-{sha[:12]}",
        "architecture": "demucs-denoiser",
        "kind": "waveform",
        "file": "model.onnx",
        "sha256": sha,
        "sample_rate": SR,
        "channels": 1,
        "sources": ["speech"],
        "speech": "speech",
        "window": window,
        "min_window": window or min_window,
        "schedule": {"window_ms": ms(run_window), "lookahead_ms": LOOKAHEAD_MS,
                     "step_ms": STEP_MS},
        "input": [{"name": "mix", "kind": "waveform", "shape": shape,
                   "layout": "batch, channel, sample"}],
        "output": [{"name": "speech", "kind": "waveform", "shape": shape,
                    "layout": "batch, channel, sample"}],
        "provenance": {
            "source": "denoiser 0.1.5 (PyPI), https://github.com/facebookresearch/denoiser",
            "license": "CC-BY-NC-4.0",
            "weights": weights_desc,
            "exporter": (
                f"tools/export/export_denoiser.py, torch {vers['torch']} dynamo exporter, "
                f"opset {ec.OPSET}, onnx {onnx.__version__}, onnxscript {vers['onnxscript']}; "
                f"checked with onnxruntime {onnxruntime.__version__}"
            ),
            "config": cfg,
        },
    }
    comments = {
        "version": "changes whenever the weights or the graph change (for cache keys)",
        "window": "samples per run (the graph's fixed time axis); 0 = any length >= min_window",
        "schedule": "defaults for windowed streaming (the runtime can override them)",
    }
    ec.write_toml(out / "model.toml", doc, comments,
                  header=f"{display}: written by tools/export/export_denoiser.py")

    import importlib.metadata

    dist = importlib.metadata.distribution("denoiser")
    lic = [f for f in dist.files if f.name == "LICENSE"]
    if lic:
        (out / "LICENSE").write_text(lic[0].read_text(encoding="utf-8"), encoding="utf-8")
    params = sum(p.numel() for p in model.parameters())
    cmd = (f"cargo xtask export-model {args.name}" + (" --random-init" if args.random_init else "")
           + (f" --window-s {args.window_s}" if args.window_s is not None else "")
           + (" --weights ..." if args.weights is not None else ""))
    lines = [
        f"# {display} (ONNX) — provenance",
        "",
        f"Written by `{cmd}` (tools/export/export_denoiser.py).",
        "",
        "**Model.** The causal Demucs speech enhancer (Alexandre Défossez, Gabriel Synnaeve, "
        "Yossi Adi, \"Real Time Speech Enhancement in the Waveform Domain\", Interspeech 2020), "
        "the `Demucs` class of the PyPI package `denoiser==0.1.5` "
        f"(<https://github.com/facebookresearch/denoiser>), {params} parameters, 16 kHz mono.",
        "",
        f"**Weights.** {weights_desc}.",
        "",
    ]
    if args.random_init:
        lines += [
            "The weights are random: this model removes nothing. It exists so that tests can "
            "run the real graph structure and streaming in seconds. Constructor arguments "
            "(`denoiser.demucs.Demucs`):",
            "",
            "```",
            ", ".join(f"{k}={v!r}" for k, v in getattr(model, "_init_args_kwargs",
                                                        ((), {}))[1].items()),
            "```",
            "",
        ]
    lines += [
        "**Licence: Creative Commons Attribution-NonCommercial 4.0 International "
        "(CC BY-NC 4.0)**, `LICENSE` (copied from the wheel's "
        "`denoiser-0.1.5.dist-info/licenses/LICENSE`; setup.py and the README say the same). "
        + (
            "The weights here are random, but the graph is a translation of the CC BY-NC code, "
            "so treat this folder as CC BY-NC 4.0 too: no commercial use."
            if args.random_init
            else "The pretrained weights are published by the same project with no other "
            "licence, so they are CC BY-NC 4.0 as well: no commercial use."
        ),
        "",
        "**Graph.** `Demucs.forward` unchanged, exported by torch "
        f"{vers['torch']} (dynamo exporter, opset {ec.OPSET}); `valid_length` is replaced by "
        "the same formula in integer arithmetic so that the time axis stays symbolic. "
        + (f"Fixed window of {window} samples. " if window
           else f"Dynamic time axis: any length of at least {min_window} samples. ")
        + f"Operators: {', '.join(ops)}.",
        "",
        f"`model.onnx` sha256: `{sha}`",
        "",
        f"**Checked when exported** (max abs error, relative to the peak), onnxruntime "
        f"{vers['onnxruntime']}:",
        "",
    ]
    for what, (a, r) in checks.items():
        lines.append(f"- {what}: {a:.3g} ({r:.3g})")
    lines.append("")
    (out / "PROVENANCE.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
