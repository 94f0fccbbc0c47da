"""Exports a trained vsep-small checkpoint to OUT/ (model.onnx, model.toml, reference/) and
checks the graph against torch with onnxruntime (fails above 1e-4 of the output's peak).

    python tools/train/export.py --checkpoint RUN/best.pt --out models/vsep-small
"""

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NOTES, check_onnx, errors_toml, model_toml  # noqa: E402
from model import HOP, N_FFT, SAMPLE_RATE, VSep  # noqa: E402

TOL = 1e-4
LENGTHS = [1024, 4097, 16000, 48000, 160000]


def test_signal(n):
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(0)
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1000 * t) + 0.05 * rng.standard_normal(n)
    return x.astype(np.float32)[None, None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default="vsep-small")
    a = ap.parse_args()
    torch.manual_seed(0)
    st = torch.load(a.checkpoint, weights_only=False)
    model = VSep()
    model.load_state_dict(st["model"])
    model.eval()
    a.out.mkdir(parents=True, exist_ok=True)
    onnx_path = a.out / "model.onnx"
    x = torch.from_numpy(test_signal(48000))
    # The TorchScript exporter: the dynamo exporter (torch 2.15) gave a graph that outputs NaN
    # for lengths other than the example's.
    torch.onnx.export(
        model, (x,), str(onnx_path), dynamo=False, input_names=["mix"], output_names=["speech"],
        dynamic_axes={"mix": {2: "T"}, "speech": {2: "T"}}, opset_version=17,
    )
    errors = check_onnx(onnx_path, model, lambda n: (test_signal(n),), ["mix"], LENGTHS, TOL)
    ref_dir = a.out / "reference"
    ref_dir.mkdir(exist_ok=True)
    mix = test_signal(64000)
    with torch.no_grad():
        torch_out = model(torch.from_numpy(mix)).numpy()
    mix[0].astype("<f4").tofile(ref_dir / "mix.f32")
    torch_out[0].astype("<f4").tofile(ref_dir / "torch_forward.f32")
    (ref_dir / "reference.toml").write_text(
        f'''# Reference vectors for {a.name}, written by tools/train/export.py.

model = "{a.name}"
format = "raw little-endian float32, C order (last axis fastest), no header"
sample_rate = {SAMPLE_RATE}
window = 0
input = "0.3 sin(2 pi 220 t) + 0.1 sin(2 pi 1000 t) + 0.05 N(0, 1) (numpy default_rng(0))"

[generated_with]
torch = "{torch.__version__}"
onnxruntime = "{ort.__version__}"
numpy = "{np.__version__}"

[[file]]
file = "mix.f32"
shape = [1, 64000]
what = "input [1, samples]"
[[file]]
file = "torch_forward.f32"
shape = [1, 64000]
what = "torch forward on the whole of mix: [1, samples] (the graph must match it within 1e-4 of its peak)"

''' + errors_toml(errors)
    )
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    params = sum(p.numel() for p in model.parameters())
    (a.out / "model.toml").write_text(
        model_toml(
            f"{a.name}: written by tools/train/export.py",
            name=a.name,
            version=f"epoch{st.get('epoch', 0)}-{sha[:12]}",
            architecture="demucs-denoiser",
            sha256=sha,
            sample_rate=SAMPLE_RATE,
            min_window=N_FFT,
            schedule={"window_ms": 3000, "lookahead_ms": 500, "step_ms": 500},
            inputs=[("mix", "waveform")],
            provenance={
                "source": "Voxsift, tools/train (trained on packaged Debian audio, see MODEL_CARD.md)",
                "license": "CC-BY-SA-3.0",
                "weights": f"tools/train/train.py, epoch {st.get('epoch', 0)}, validation SI-SDR "
                f"{st.get('valid_si_sdr', float('nan')):.2f} dB",
                "exporter": f"tools/train/export.py, torch {torch.__version__} TorchScript exporter, "
                f"opset 17; checked with onnxruntime {ort.__version__}",
            },
            config={"n_fft": N_FFT, "hop": HOP, "parameters": params},
            notes={
                **NOTES,
                "architecture": (
                    'The runtime knows "htdemucs" and "demucs-denoiser"; this is neither (a spectral-mask\n'
                    "network with its STFT inside the graph), but it has the denoiser's interface (waveform in,\n"
                    "speech waveform out, dynamic time axis), which is all the label selects."
                ),
            },
        )
    )
    print(f"wrote {a.out} (sha256 {sha[:12]}, {onnx_path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
