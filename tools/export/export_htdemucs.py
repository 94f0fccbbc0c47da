"""Export HTDemucs (demucs 4.x: `htdemucs`, or the vocals model of `htdemucs_ft`) to ONNX
without its STFT/iSTFT, with model.toml, PROVENANCE.md, LICENSE and reference vectors.

Run by `cargo xtask export-model htdemucs|htdemucs_ft [--random-init] [--out DIR]
[--window-s S]` in the venv it makes (.venv-export/). See docs/models.md for the graph's
inputs, outputs and STFT conventions.

The graph is HTDemucs.forward itself, run with four of its methods replaced on the instance
while torch.onnx.export traces it: `_spec` returns the `spec` input, `_magnitude` passes it
through (it is already complex-as-channels), `_mask` records the spectrogram branch's output
(`spec_out`) and `_ispec` returns 0, so what forward returns is the time branch alone
(`wave_out`). Everything between is the unmodified model.
"""

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

import export_common as ec
import htdemucs_stft as hs

# The small random-init model: the architecture of htdemucs (n_fft 4096, depth 4, 4 sources,
# a bottleneck before a cross-domain transformer with one self- and one cross-attention
# layer), with few channels and a 1 s segment so that it builds and runs in seconds.
TINY = dict(
    sources=["drums", "bass", "other", "vocals"],
    audio_channels=2,
    samplerate=44100,
    segment=1,
    nfft=4096,
    depth=4,
    channels=4,
    growth=2,
    dconv_comp=4,
    bottom_channels=16,
    t_layers=2,
    t_heads=4,
)
SPEECH = "vocals"
INPUT_SECONDS = 2.0  # reference input: two windows of htdemucs-tiny
SHORT_SECONDS = 0.3  # a window shorter than the graph's, zero-padded
WEIGHTS_URLS = (
    "HuggingFace hub (adefossez/HTDemucs, adefossez/HTDemucs-ft), then "
    "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/"
)


class Core(torch.nn.Module):
    """HTDemucs.forward between `_spec` and `_mask`: (mix, spec) -> (spec_out, wave_out)."""

    PATCHED = ("_spec", "_magnitude", "_mask", "_ispec")

    def __init__(self, model, source=None):
        super().__init__()
        self.model = model
        self.source = source  # index to keep (e.g. vocals only), or None for all

    def forward(self, mix, spec):
        m = self.model
        seen = {}

        def mask(_z, m_out):
            seen["spec_out"] = m_out
            return m_out

        m._spec = lambda _x: spec
        m._magnitude = lambda z: z
        m._mask = mask
        m._ispec = lambda _z, _length=None, scale=0: 0
        try:
            wave_out = m(mix)
        finally:
            for name in self.PATCHED:
                delattr(m, name)
        spec_out = seen["spec_out"]
        if self.source is not None:
            s = self.source
            spec_out = spec_out[:, s : s + 1]
            wave_out = wave_out[:, s : s + 1]
        return spec_out, wave_out


def load_pretrained(name, repo=None):
    """(model, index of the one source kept or None for all, signature) for a pretrained
    demucs name, downloaded by demucs, or read from `repo`: a folder of demucs model files
    (`<signature>[-<checksum>].th`, as dl.fbaipublicfiles.com serves them) and optionally
    `<name>.yaml` (else the one that comes with demucs)."""
    import yaml
    from demucs import pretrained
    from demucs.apply import BagOfModels
    from demucs.repo import LocalRepo

    bag_file = Path(pretrained.REMOTE_ROOT) / f"{name}.yaml"
    if repo is not None and (Path(repo) / f"{name}.yaml").exists():
        bag_file = Path(repo) / f"{name}.yaml"
    bag_def = yaml.safe_load(bag_file.read_text())
    sigs = bag_def["models"]
    if repo is not None:
        try:
            local = LocalRepo(Path(repo))
            bag = BagOfModels([local.get_model(s) for s in sigs], bag_def.get("weights"),
                              bag_def.get("segment"))
        except Exception as e:  # noqa: BLE001
            ec.fail(f"cannot load {name} ({', '.join(sigs)}) from {repo}: {e}")
    else:
        try:
            bag = pretrained.get_model(name)
        except Exception as e:  # noqa: BLE001 - any download failure ends the same way
            print(
                f"error: could not download the pretrained weights of {name} ({WEIGHTS_URLS}):"
                f" {type(e).__name__}: {e}\nThis needs internet access (or a filled HuggingFace"
                " / torch hub cache, or --weights DIR with the model files); pass --random-init "
                "for the small random model instead.",
                file=sys.stderr,
            )
            sys.exit(ec.EXIT_NO_WEIGHTS)
    models = list(bag.models) if isinstance(bag, BagOfModels) else [bag]
    weights = bag.weights if isinstance(bag, BagOfModels) else [[1.0] * len(bag.sources)]
    if len(models) == 1:
        return models[0], None, sigs[0]
    k = models[0].sources.index(SPEECH)
    using = [i for i, w in enumerate(weights) if w[k] != 0]
    if len(using) != 1:
        ec.fail(f"{name}: {SPEECH} comes from {len(using)} models of the bag; expected one")
    i = using[0]
    return models[i], k, sigs[i]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=["htdemucs", "htdemucs_ft"])
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--window-s", type=float, default=None)
    p.add_argument("--weights", type=Path, default=None,
                   help="folder with the pretrained model files instead of downloading them")
    args = p.parse_args()
    from demucs.htdemucs import HTDemucs

    if args.random_init:
        torch.manual_seed(args.seed)
        model = HTDemucs(**TINY)
        source = TINY["sources"].index(SPEECH) if args.name == "htdemucs_ft" else None
        weights_id = f"random-init-seed{args.seed}"
        weights_desc = f"random initialisation (torch.manual_seed({args.seed}), demucs defaults)"
        display = "htdemucs-tiny" if source is None else "htdemucs_ft-tiny"
    else:
        model, source, sig = load_pretrained(args.name, args.weights)
        weights_id = f"{args.name}-{sig}"
        origin = WEIGHTS_URLS if args.weights is None else f"read from {args.weights.name}/"
        weights_desc = f"pretrained {args.name}, model {sig} ({origin})"
        display = args.name if source is None else f"{args.name}-{SPEECH}"
    if not isinstance(model, HTDemucs):
        ec.fail(f"{args.name} is a {type(model).__name__}, not an HTDemucs")
    model.eval()
    if not model.cac or not model.use_train_segment:
        ec.fail("only complex-as-channels models with use_train_segment are supported")

    sr = int(model.samplerate)
    chans = int(model.audio_channels)
    train_len = int(model.segment * sr)
    window = train_len
    if args.window_s is not None:
        window = int(round(args.window_s * sr))
        if window != train_len:
            # forward pads every input to int(segment * samplerate): make that the window.
            model.segment = Fraction(window, sr)
    n_fft = int(model.nfft)
    hop = n_fft // 4
    if window < n_fft:
        ec.fail(f"the window ({window} samples) must be at least n_fft = {n_fft} samples")
    bins = n_fft // 2
    frames = hs.frames_for(window, n_fft)
    sources = list(model.sources) if source is None else [model.sources[source]]
    n_src = len(sources)
    speech_idx = sources.index(SPEECH)
    core = Core(model, source).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # Reference input and the graph's inputs for its first window.
    total = max(int(round(INPUT_SECONDS * sr)), 2 * window)
    mix = ec.test_signal(chans, total, sr, args.seed)
    mix0 = mix[:, :window]
    spec0 = hs.spec(mix0, n_fft)[None]
    with torch.no_grad():
        t_spec = model._magnitude(model._spec(torch.from_numpy(mix0)[None])).numpy()
        t_spec_out, t_wave_out = core(torch.from_numpy(mix0)[None], torch.from_numpy(spec0))
        t_full0 = model(torch.from_numpy(mix0)[None])[0].numpy()
    err_spec = ec.max_err(spec0, t_spec)

    print(f"exporting {display}: window {window} samples, spec [1, {2 * chans}, {bins}, {frames}]")
    t0 = time.time()
    onnx_path = out / "model.onnx"
    ops = ec.export_onnx(
        core,
        (torch.from_numpy(mix0)[None], torch.from_numpy(spec0)),
        onnx_path,
        ["mix", "spec"],
        ["spec_out", "wave_out"],
    )
    print(f"exported in {time.time() - t0:.1f} s: {onnx_path} ({onnx_path.stat().st_size} bytes)")

    # ONNX Runtime on the numpy spectrogram against torch.
    sess = ec.ort_session(onnx_path)
    g_spec_out, g_wave_out = sess.run(None, {"mix": mix0[None], "spec": spec0})
    err_graph = (
        ec.max_err(g_spec_out, t_spec_out.numpy()),
        ec.max_err(g_wave_out, t_wave_out.numpy()),
    )

    def run_window(x):
        """Graph + numpy STFT on one window (zero-padded at the end to the graph's window),
        the full model output [S, C, len(x)]."""
        length = x.shape[-1]
        xp = np.zeros((chans, window), dtype=np.float32)
        xp[:, :length] = x
        so, wo = sess.run(None, {"mix": xp[None], "spec": hs.spec(xp, n_fft)[None]})
        return (hs.ispec(so[0], window) + wo[0])[..., :length]

    full0 = run_window(mix0)
    t_full0_kept = t_full0 if source is None else t_full0[source : source + 1]
    err_full = ec.max_err(full0, t_full0_kept)

    short_len = int(round(SHORT_SECONDS * sr))
    if short_len >= window:
        short_len = window // 3
    mix_short = mix[:, :short_len]
    with torch.no_grad():
        t_short = model(torch.from_numpy(mix_short)[None])[0].numpy()
    t_short = t_short if source is None else t_short[source : source + 1]
    err_short = ec.max_err(run_window(mix_short), t_short)

    # demucs's own long-file processing (what `demucs` does to a file, without the random
    # shifts): windows of the segment, 25 % overlap, triangular cross-fades.
    from demucs.apply import apply_model

    with torch.no_grad():
        t_file = apply_model(
            model, torch.from_numpy(mix)[None], shifts=0, split=True, overlap=0.25, progress=False
        )[0].numpy()
    t_file = t_file if source is None else t_file[source : source + 1]

    # The default schedule, emulated with the graph: each run covers `window` samples
    # ending `lookahead` after the `step` samples it contributes; no cross-fade.
    step = window // 4
    lookahead = window // 4
    streamed = np.zeros_like(t_file)
    for start in range(0, total, step):
        end = start + step + lookahead
        x = np.zeros((chans, window), dtype=np.float32)
        a = end - window
        lo, hi = max(a, 0), min(end, total)
        x[:, lo - a : hi - a] = mix[:, lo:hi]
        y = run_window(x)
        keep = min(step, total - start)
        streamed[..., start : start + keep] = y[..., start - a : start - a + keep]
    err_stream = ec.max_err(streamed[speech_idx], t_file[speech_idx])
    snr_stream = ec.snr_db(streamed[speech_idx], t_file[speech_idx])

    tol = 1e-4
    checks = {
        "numpy spec vs torch _spec+_magnitude": err_spec,
        "graph spec_out vs torch": err_graph[0],
        "graph wave_out vs torch": err_graph[1],
        "graph + numpy STFT/iSTFT vs torch forward (window 0)": err_full,
        f"graph + numpy, {short_len}-sample input zero-padded, vs torch forward": err_short,
    }
    ok = True
    for what, (abs_e, rel_e) in checks.items():
        flag = "ok" if rel_e < tol else "FAIL"
        ok &= rel_e < tol
        print(f"  {flag:4} {what}: max abs {abs_e:.3g}, relative to peak {rel_e:.3g}")
    print(
        f"  info streamed (window {window}, step {step}, lookahead {lookahead}, no fades) vs "
        f"demucs apply_model on {total} samples, {SPEECH}: max abs {err_stream[0]:.3g}, "
        f"relative {err_stream[1]:.3g}, SNR {snr_stream:.1f} dB"
    )
    if not ok:
        ec.fail(f"the exported graph does not reproduce the torch model within {tol}")

    # Reference vectors.
    ref = ec.Refs(out / "reference")
    ref.write("mix", mix, f"input [C, samples]: test_signal(channels={chans}, seed={args.seed})")
    ref.write("window0_spec", spec0, "graph input `spec` for the first window (mix[:, :window])")
    ref.write(
        "window0_spec_out_speech",
        g_spec_out[:, speech_idx : speech_idx + 1],
        f"graph output `spec_out` for window 0, source {SPEECH} only: [1, 1, 2C, F, N]",
    )
    ref.write(
        "window0_wave_out_speech",
        g_wave_out[:, speech_idx : speech_idx + 1],
        f"graph output `wave_out` for window 0, source {SPEECH} only: [1, 1, C, T]",
    )
    ref.write(
        "window0_forward_speech",
        t_full0_kept[speech_idx],
        f"torch HTDemucs forward on mix[:, :window] (its own STFT/iSTFT), {SPEECH}: "
        "[C, window]",
    )
    ref.write(
        "short_forward_speech",
        t_short[speech_idx],
        f"torch forward on mix[:, :{short_len}] (shorter than the window: the model zero-pads "
        f"it at the end), {SPEECH}: [C, {short_len}]",
    )
    ref.write(
        "full_file_speech",
        t_file[speech_idx],
        "demucs.apply.apply_model(model, mix, shifts=0, split=True, overlap=0.25): demucs's "
        f"long-file processing, {SPEECH}: [C, samples]",
    )
    ref.write(
        "streamed_speech",
        streamed[speech_idx],
        f"graph + numpy STFT/iSTFT run as the default schedule (see streamed_how), {SPEECH}: "
        "[C, samples]",
    )
    files = ref.files

    import onnx
    import onnxruntime

    vers = ec.versions("torch", "demucs", "onnx", "onnxscript", "onnxruntime", "numpy")
    ec.write_toml(
        out / "reference" / "reference.toml",
        {
            "model": display,
            "format": "raw little-endian float32, C order (last axis fastest), no header",
            "sample_rate": sr,
            "window": window,
            "speech_index": speech_idx,
            "input": (
                f"per channel c: 0.3 sin(2 pi 220 (1 + c/2) t) + 0.1 (0.5 + 0.5 sin(2 pi 3 t + c))"
                f" sin(2 pi 1000 t) + 0.05 N(0, 1) (numpy default_rng({args.seed}), drawn per "
                "channel in order)"
            ),
            "generated_with": vers,
            "file": files,
            "errors": {
                "note": "max |a - b| and that over max |b|, measured when exported",
                **{k: [float(f"{x:.3g}") for x in v] for k, v in checks.items()},
                "streamed_vs_full_file": [float(f"{x:.3g}") for x in err_stream],
                "streamed_vs_full_file_snr_db": round(snr_stream, 2),
            },
            "streamed_how": (
                f"run k (k = 0, 1, ...) feeds the graph mix[:, k*{step} + {step + lookahead} - "
                f"{window} : k*{step} + {step + lookahead}] (zeros before sample 0 and after the "
                f"end) and keeps its output samples [{window - step - lookahead}, "
                f"{window - lookahead}) as output samples [k*{step}, k*{step} + {step}); no "
                "cross-fade"
            ),
            "streamed_note": (
                "streamed_speech is what a streaming implementation of streamed_how should "
                "reproduce; full_file_speech is demucs's own long-file result"
            ) if not args.random_init else (
                "random weights make no use of context the way a trained model does: a window "
                "moved by a few thousand samples changes its output by up to its peak, so "
                "streamed_speech is far from full_file_speech (see errors); compare a streaming "
                "implementation with streamed_speech exactly, and with full_file_speech only "
                "loosely"
            ),
        },
        header=f"Reference vectors for {display}, written by tools/export/export_htdemucs.py.",
    )

    sha = ec.sha256(onnx_path)
    ms = lambda n: int(round(1000 * n / sr))  # noqa: E731
    kwargs = ec.jsonable(getattr(model, "_init_args_kwargs", ((), {}))[1])
    kwargs.pop("sources", None)
    doc = {
        "format": 1,
        "name": display,
        "version": f"{weights_id}-{sha[:12]}",
        "architecture": "htdemucs",
        "kind": "hybrid",
        "file": "model.onnx",
        "sha256": sha,
        "sample_rate": sr,
        "channels": chans,
        "sources": sources,
        "speech": SPEECH,
        "window": window,
        "min_window": window,
        "stft": {
            "n_fft": n_fft,
            "hop": hop,
            "bins": bins,
            "frames": frames,
            "window_fn": "hann-periodic",
            "normalized": True,
            "framing": "htdemucs",
            "layout": "cac",
        },
        "schedule": {"window_ms": ms(window), "lookahead_ms": ms(lookahead), "step_ms": ms(step)},
        "input": [
            {
                "name": "mix",
                "kind": "waveform",
                "shape": [1, chans, window],
                "layout": "batch, channel, sample",
            },
            {
                "name": "spec",
                "kind": "spectrum",
                "shape": [1, 2 * chans, bins, frames],
                "layout": "batch, 2*channel + (0 real | 1 imag), bin, frame",
            },
        ],
        "output": [
            {
                "name": "spec_out",
                "kind": "spectrum",
                "shape": [1, n_src, 2 * chans, bins, frames],
                "layout": "batch, source, 2*channel + (0 real | 1 imag), bin, frame",
            },
            {
                "name": "wave_out",
                "kind": "waveform",
                "shape": [1, n_src, chans, window],
                "layout": "batch, source, channel, sample",
            },
        ],
        "provenance": {
            "source": "demucs 4.1.0 (PyPI), https://github.com/adefossez/demucs",
            "license": "MIT",
            "weights": weights_desc,
            "exporter": (
                f"tools/export/export_htdemucs.py, torch {vers['torch']} dynamo exporter, "
                f"opset {ec.OPSET}, onnx {onnx.__version__}, onnxscript {vers['onnxscript']}; "
                f"checked with onnxruntime {onnxruntime.__version__}"
            ),
            "segment": ("training segment" if window == train_len
                        else f"set to the window (training segment {train_len} samples)"),
            "config": kwargs,
        },
    }
    comments = {
        "version": "changes whenever the weights or the graph change (for cache keys)",
        "window": "samples per run (the graph's fixed time axis); 0 = any length >= min_window",
        "stft": "hybrid only: the spectrogram is computed outside the graph; see docs/models.md",
        "schedule": "defaults for windowed streaming (the runtime can override them)",
    }
    ec.write_toml(out / "model.toml", doc, comments,
                  header=f"{display}: written by tools/export/export_htdemucs.py")
    write_license_and_provenance(out, display, args, weights_desc, window, train_len, sources,
                                 source, vers, checks, sha, ops, model)
    print(f"wrote {out}")


def write_license_and_provenance(out, display, args, weights_desc, window, train_len, sources,
                                 source, vers, checks, sha, ops, model):
    import importlib.metadata

    dist = importlib.metadata.distribution("demucs")
    lic = [f for f in dist.files if f.name == "LICENSE"]
    if lic:
        (out / "LICENSE").write_text(lic[0].read_text(encoding="utf-8"), encoding="utf-8")
    params = sum(p.numel() for p in model.parameters())
    cfg = getattr(model, "_init_args_kwargs", ((), {}))[1]
    lines = [
        f"# {display} (ONNX) — provenance",
        "",
        f"Written by `cargo xtask export-model {args.name}"
        + (" --random-init" if args.random_init else "")
        + (f" --window-s {args.window_s}" if args.window_s is not None else "")
        + (" --weights ..." if args.weights is not None else "")
        + "` (tools/export/export_htdemucs.py).",
        "",
        "**Model.** Hybrid Transformer Demucs (Simon Rouard, Francisco Massa, Alexandre Défossez,"
        " \"Hybrid Transformers for Music Source Separation\", ICASSP 2023), the `HTDemucs` class "
        "of the PyPI package `demucs==4.1.0` (<https://github.com/adefossez/demucs>), "
        f"{params} parameters, sources {sources}"
        + ("" if source is None else f" (only `{sources[0]}` is output)")
        + ".",
        "",
        f"**Weights.** {weights_desc}.",
        "",
    ]
    if args.random_init:
        lines += [
            "The weights are random: this model separates nothing. It exists so that tests can "
            "run the real graph structure, STFT conventions and streaming in seconds. "
            "Constructor arguments (`demucs.htdemucs.HTDemucs`):",
            "",
            "```",
            ", ".join(f"{k}={v!r}" for k, v in cfg.items()),
            "```",
            "",
        ]
    lines += [
        "**Licence.** The demucs code is MIT (`LICENSE`, copied from the wheel's "
        "`demucs-4.1.0.dist-info/licenses/LICENSE`). "
        + (
            "The random weights and this export are covered by the same MIT licence."
            if args.random_init
            else "The pretrained weights are published by the same project with no separate "
            "licence (the project's README: \"Demucs is released under the MIT license\"); "
            "they were trained on MUSDB18-HQ plus 800 songs of the authors, and MUSDB18 is "
            "distributed for research use. Check its terms and the model card on the "
            "HuggingFace hub before commercial use or redistribution."
        ),
        "",
        "**Graph.** `HTDemucs.forward` without `_spec`/`_magnitude` at the start and without "
        "`_mask`/`_ispec` at the end (see docs/models.md): inputs `mix` and `spec`, outputs "
        f"`spec_out` and `wave_out`; window {window} samples"
        + ("" if window == train_len else f" (training segment {train_len})")
        + f"; exported by torch {vers['torch']} (dynamo exporter, opset {ec.OPSET}). "
        f"Operators: {', '.join(ops)}.",
        "",
        f"`model.onnx` sha256: `{sha}`",
        "",
        "**Checked when exported** (max abs error, relative to the peak), onnxruntime "
        f"{vers['onnxruntime']}:",
        "",
    ]
    for what, (a, r) in checks.items():
        lines.append(f"- {what}: {a:.3g} ({r:.3g})")
    lines.append("")
    (out / "PROVENANCE.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
