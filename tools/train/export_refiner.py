"""Exports a trained dfn3-refiner checkpoint to OUT/ (model.onnx, model.toml, reference/) and
checks the graph (DFT as convolutions) against the torch model as trained (torch.stft) with
onnxruntime; fails above 1e-4 of the output's peak.

    python tools/train/export_refiner.py --checkpoint RUN/best.pt --out models/dfn3-refiner
"""

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refiner as R  # noqa: E402
from common import NOTES, check_onnx, errors_toml, model_toml  # noqa: E402

TOL = 1e-4
LENGTHS = [4096, 4097, 48000, 96000, 150001]


def test_signals(n):
    """(mix, dfn3) [1, 1, n]: tones and noise, and a quieter, partly different 'estimate'."""
    t = np.arange(n) / R.SAMPLE_RATE
    rng = np.random.default_rng(0)
    speechy = 0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    music = 0.1 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)
    mix = (speechy + music).astype(np.float32)
    dfn3 = (speechy + 0.1 * music).astype(np.float32)
    return mix[None, None], dfn3[None, None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default="dfn3-refiner")
    ap.add_argument("--command", default="cargo xtask train-refiner")
    a = ap.parse_args()
    st = torch.load(a.checkpoint, weights_only=False)
    model = R.Refiner(variant=st.get("variant", "mix"))
    model.load_state_dict(st["model"])
    model.eval()
    graph = R.Export(model).eval()
    a.out.mkdir(parents=True, exist_ok=True)
    onnx_path = a.out / "model.onnx"
    mix, dfn3 = (torch.from_numpy(v) for v in test_signals(48000))
    torch.onnx.export(
        graph,
        (mix, dfn3),
        str(onnx_path),
        dynamo=False,
        input_names=["mix", "dfn3"],
        output_names=["speech"],
        dynamic_axes={"mix": {2: "T"}, "dfn3": {2: "T"}, "speech": {2: "T"}},
        opset_version=17,
        # Folding would store the synthesis kernels (the analysis ones times a scale) as a
        # second DFT matrix; ONNX Runtime folds them when it loads the graph instead.
        do_constant_folding=False,
    )
    errors = check_onnx(onnx_path, model, test_signals, ["mix", "dfn3"], LENGTHS, TOL)
    ref_dir = a.out / "reference"
    ref_dir.mkdir(exist_ok=True)
    m, d = test_signals(96000)
    with torch.no_grad():
        out = model(torch.from_numpy(m), torch.from_numpy(d)).numpy()
    m[0].astype("<f4").tofile(ref_dir / "mix.f32")
    d[0].astype("<f4").tofile(ref_dir / "dfn3.f32")
    out[0].astype("<f4").tofile(ref_dir / "torch_forward.f32")
    (ref_dir / "reference.toml").write_text(
        f'''# Reference vectors for {a.name}, written by tools/train/export_refiner.py.

model = "{a.name}"
format = "raw little-endian float32, C order (last axis fastest), no header"
sample_rate = {R.SAMPLE_RATE}
window = 0
input = "mix: 0.2 sin(2 pi 180 t)(1 + sin(2 pi 3 t)) + 0.1 sin(2 pi 440 t) + 0.05 N(0, 1) (numpy default_rng(0)); dfn3: the first term + 0.1 x the rest"

[generated_with]
torch = "{torch.__version__}"
onnxruntime = "{ort.__version__}"
numpy = "{np.__version__}"

[[file]]
file = "mix.f32"
shape = [1, 96000]
what = "input mix [1, samples]"
[[file]]
file = "dfn3.f32"
shape = [1, 96000]
what = "input dfn3 [1, samples]"
[[file]]
file = "torch_forward.f32"
shape = [1, 96000]
what = "torch forward (torch.stft, as trained) on the whole of both: [1, samples] (the graph must match it within 1e-4 of its peak)"

''' + errors_toml(errors)
    )
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    params = sum(p.numel() for p in model.parameters())
    v = st.get("valid", {})
    (a.out / "model.toml").write_text(
        model_toml(
            f"{a.name}: written by tools/train/export_refiner.py",
            name=a.name,
            version=f"epoch{st.get('epoch', 0)}-{sha[:12]}",
            architecture="dfn3-refiner",
            sha256=sha,
            sample_rate=R.SAMPLE_RATE,
            min_window=R.N_FFT * 2,
            mask="ratio",
            schedule={"window_ms": 2000, "lookahead_ms": 300, "step_ms": 400, "crossfade_ms": 200},
            inputs=[("mix", "waveform"), ("dfn3", "reference")],
            provenance={
                "source": "Voxsift, tools/train (trained on packaged Debian audio, see MODEL_CARD.md)",
                "license": "CC-BY-SA-3.0",
                "weights": f"{a.command}: tools/train/train_refiner.py, epoch {st.get('epoch', 0)}, "
                f"validation SI-SDR {v.get('valid_si_sdr', float('nan'))} dB "
                f"(DFN3 alone {v.get('valid_dfn3_si_sdr', float('nan'))} dB)",
                "exporter": f"tools/train/export_refiner.py, torch {torch.__version__} TorchScript "
                f"exporter, opset 17; checked with onnxruntime {ort.__version__}",
            },
            config={
                "n_fft": R.N_FFT,
                "hop": R.HOP,
                "cutoff_hz": R.CUTOFF_HZ,
                "bins": R.BINS,
                "variant": model.variant,
                "parameters": params,
            },
            notes={
                **NOTES,
                "architecture": "Refines DeepFilterNet3's estimate: inputs are the mix and DFN3's "
                "speech estimate of it.",
                "mask": "the masks reproduce the graph's output (complex V / X per bin), not a Wiener mask",
            },
        )
    )
    print(f"wrote {a.out} (sha256 {sha[:12]}, {onnx_path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
