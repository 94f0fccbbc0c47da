"""Re-derives a model folder's reference vectors from model.toml, reference.toml and the
graph alone, the way a runtime would (needs only numpy and onnxruntime, e.g. .venv-export/
or .venv-xtask/ after `cargo xtask stateful-models`):

    python tools/export/check_references.py models/htdemucs-tiny models/denoiser-tiny

It is an executable version of docs/models.md: the STFT conventions (htdemucs_stft.py), the
zero-padding of short windows and the `streamed_how` schedule. Exits 1 if anything is off by
more than 1e-4 of the reference's peak.
"""

import sys
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import htdemucs_stft as hs  # noqa: E402

TOL = 1e-4


def load(folder):
    model = tomllib.loads((folder / "model.toml").read_text(encoding="utf-8"))
    ref = tomllib.loads((folder / "reference" / "reference.toml").read_text(encoding="utf-8"))
    arrays = {}
    for f in ref["file"]:
        a = np.fromfile(folder / "reference" / f["file"], dtype="<f4")
        arrays[f["file"].removesuffix(".f32")] = a.reshape(f["shape"])
    return model, ref, arrays


def runner(folder, model):
    """A function: waveform [C, n] (n <= window, or any n >= min_window when dynamic) ->
    every source's output [S, C, n]."""
    sess = ort.InferenceSession(str(folder / model["file"]), providers=["CPUExecutionProvider"])
    names = [i["name"] for i in model["input"]]
    window = model["window"]
    hybrid = model["kind"] == "hybrid"
    if hybrid:
        st = model["stft"]
        assert (st["window_fn"], st["normalized"], st["framing"], st["layout"]) == (
            "hann-periodic", True, "htdemucs", "cac"), st

    def run(x):
        c, n = x.shape
        if window:
            xp = np.zeros((c, window), dtype=np.float32)
            xp[:, :n] = x
        else:
            assert n >= model["min_window"]
            xp = x.astype(np.float32)
        if hybrid:
            feeds = {names[0]: xp[None], names[1]: hs.spec(xp, model["stft"]["n_fft"])[None]}
            spec_out, wave_out = sess.run(None, feeds)
            y = hs.ispec(spec_out[0], xp.shape[-1]) + wave_out[0]
        else:
            y = sess.run(None, {names[0]: xp[None]})[0]  # [1, C, n]: one source
        return y[..., :n]

    return run


def streamed(run, mix, model, speech):
    sr = model["sample_rate"]
    s = model["schedule"]
    window = model["window"] or s["window_ms"] * sr // 1000
    step, look = s["step_ms"] * sr // 1000, s["lookahead_ms"] * sr // 1000
    c, total = mix.shape
    out = np.zeros((c, total), dtype=np.float32)
    for start in range(0, total, step):
        a = start + step + look - window
        x = np.zeros((c, window), dtype=np.float32)
        lo, hi = max(a, 0), min(a + window, total)
        x[:, lo - a : hi - a] = mix[:, lo:hi]
        keep = min(step, total - start)
        out[:, start : start + keep] = run(x)[speech][:, start - a : start - a + keep]
    return out


def check(folder):
    model, ref, arr = load(folder)
    run = runner(folder, model)
    speech = model["sources"].index(model["speech"])
    mix = arr["mix"]
    results = []

    def cmp(what, got, want):
        err = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-30)
        results.append((what, err))

    if model["kind"] == "hybrid":
        w = model["window"]
        x0 = mix[:, :w]
        cmp("window0_spec", hs.spec(x0, model["stft"]["n_fft"])[None], arr["window0_spec"])
        cmp("window0_forward_speech", run(x0)[speech], arr["window0_forward_speech"])
        n = arr["short_forward_speech"].shape[-1]
        cmp("short_forward_speech", run(mix[:, :n])[speech], arr["short_forward_speech"])
        cmp("streamed_speech", streamed(run, mix, model, speech), arr["streamed_speech"])
    else:
        n = arr["window0_forward"].shape[-1]
        cmp("window0_forward", run(mix[:, :n])[speech], arr["window0_forward"])
        cmp("full_file", run(mix)[speech], arr["full_file"])
        cmp("streamed", streamed(run, mix, model, speech), arr["streamed"])
    ok = True
    for what, err in results:
        flag = "ok" if err < TOL else "FAIL"
        ok &= err < TOL
        print(f"{folder.name}: {flag:4} {what}: {err:.3g} of the peak")
    return ok


if __name__ == "__main__":
    folders = [Path(a) for a in sys.argv[1:]] or [Path("models/htdemucs-tiny"),
                                                   Path("models/denoiser-tiny")]
    sys.exit(0 if all([check(f) for f in folders]) else 1)
