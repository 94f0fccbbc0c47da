#!/usr/bin/env python3
"""Side-by-side table of several `voxsift eval-set` reports (report.json), as markdown.

    side_by_side.py NAME=REPORT_DIR [NAME=REPORT_DIR ...] [--baseline NAME] [--singing ID ...]

Rows: the mixtures' mean SI-SDR, residual and STOI; the speech-only files' mean SI-SDR
(damage: output against input); the music-only files' mean leak, and the leak of each
`--singing` id on its own (default mu15 and mu16, the sung ones). With `--baseline`, a column of
differences of the last system against it follows. Standard library only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(spec: str) -> tuple[str, dict]:
    name, _, folder = spec.partition("=")
    if not folder:
        raise SystemExit(f"{spec}: expected NAME=REPORT_DIR")
    return name, json.loads((Path(folder) / "report.json").read_text())


def leak_of(report: dict, prefix: str) -> float | None:
    for m in report.get("music", []):
        if m["id"].startswith(prefix):
            return m["leak_db"]
    return None


def rows(report: dict, singing: list[str]) -> list[tuple[str, float | None]]:
    s = report["summary"]
    out = [
        ("mixtures: mean SI-SDR (dB)", s["mixtures"]["si_sdr"]),
        ("mixtures: mean music residual (dB)", s["mixtures"]["residual_db"]),
        ("mixtures: mean STOI", s["mixtures"]["stoi"]),
        ("speech only: mean SI-SDR, output vs input (dB)", s["speech"]["si_sdr"]),
        ("music only: mean leak (dB)", s["music"]["leak_db"]),
    ]
    for m in report["mixtures"]:
        if not m["talker_mix"]:
            out.append((f"{m['id'][:4]}: SI-SDR (dB)", m["si_sdr"]))
    for prefix in singing:
        out.append((f"{prefix} (singing): leak (dB)", leak_of(report, prefix)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("reports", nargs="+", metavar="NAME=REPORT_DIR")
    ap.add_argument("--baseline", help="NAME of the system the last one is compared with")
    ap.add_argument("--singing", nargs="*", default=["mu15", "mu16"])
    a = ap.parse_args()
    systems = [load(s) for s in a.reports]
    names = [n for n, _ in systems]
    table = [rows(r, a.singing) for _, r in systems]
    base = names.index(a.baseline) if a.baseline else None
    head = names + ([f"{names[-1]} − {a.baseline}"] if base is not None else [])
    print("| | " + " | ".join(head) + " |")
    print("|---|" + "---:|" * len(head))
    for i, (label, _) in enumerate(table[0]):
        vals = [t[i][1] for t in table]
        digits = 3 if "STOI" in label else 2
        cells = ["–" if v is None else f"{v:.{digits}f}" for v in vals]
        if base is not None:
            b, last = vals[base], vals[-1]
            cells.append("–" if b is None or last is None else f"{last - b:+.{digits}f}")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
