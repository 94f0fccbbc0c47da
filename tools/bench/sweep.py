#!/usr/bin/env python3
"""Table and plot of a beta/floor sweep made by tools/bench/sweep.sh.

    sweep.py OUT_DIR [--no-plot] [--plot FILE]

Reads OUT_DIR/<setting>/report.json (voxsift_b<BETA>_f<FLOOR|off>, libdeepfilter_l<LIMIT|none>),
prints one Markdown table (one row per setting) and, unless --no-plot, writes a PNG of the
curves over beta (default OUT_DIR/sweep.png; needs matplotlib).

Columns (means over the files of each group, as in report.md):
  mix SI-SDR / SI-SDRi / STOI / residual: cx01, cx02, cx04 (cx03 is a second talker, left out)
  speech SI-SDR mean / worst, level: sp01-sp10, output against input (damage; higher is better)
  music leak mean / worst 1 s: mu*, output level against input (lower is better)
  mu15, mu16: the two singing files on their own
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def load(out: Path) -> list[dict]:
    rows = []
    for rep in sorted(out.glob("*/report.json")):
        name = rep.parent.name
        m = re.fullmatch(r"voxsift_b([0-9.]+)_f(off|[0-9.]+)", name)
        lm = re.fullmatch(r"libdeepfilter_l(none|[0-9.]+)", name)
        if m:
            system, beta = "voxsift", float(m.group(1))
            floor = None if m.group(2) == "off" else -float(m.group(2))
        elif lm:
            system, beta = "libdeepfilter", None
            floor = None if lm.group(1) == "none" else -float(lm.group(1))
        else:
            continue
        d = json.loads(rep.read_text())
        s = d["summary"]
        speech = d["speech"]
        music = {x["id"][:4]: x for x in d["music"]}
        rows.append(
            dict(
                system=system,
                beta=beta,
                floor=floor,
                mix_sisdr=s["mixtures"]["si_sdr"],
                mix_sisdri=s["mixtures"]["si_sdr_improvement"],
                mix_stoi=s["mixtures"]["stoi"],
                residual=s["mixtures"]["residual_db"],
                sp_sisdr=s["speech"]["si_sdr"],
                sp_worst=min(x["si_sdr"] for x in speech),
                sp_worst_id=min(speech, key=lambda x: x["si_sdr"])["id"][:4],
                sp_level=s["speech"]["level_change_db"],
                sp_stoi=s["speech"]["stoi"],
                leak=s["music"]["leak_db"],
                leak_worst=s["music"]["worst_segment_leak_db"],
                mu15=music.get("mu15", {}).get("leak_db", float("nan")),
                mu16=music.get("mu16", {}).get("leak_db", float("nan")),
            )
        )
    rows.sort(
        key=lambda r: (
            r["system"] != "voxsift",
            r["floor"] is not None,
            r["beta"] or 0.0,
            -(r["floor"] or 0.0),
        )
    )
    return rows


def label(r: dict) -> str:
    floor = "off" if r["floor"] is None else f"{r['floor']:g} dB"
    if r["system"] == "libdeepfilter":
        lim = "none" if r["floor"] is None else f"{-r['floor']:g} dB"
        return f"libdeepfilter, atten-lim {lim}"
    return f"voxsift beta {r['beta']:g}, floor {floor}"


def table(rows: list[dict]) -> str:
    head = (
        "| setting | mix SI-SDR | SI-SDRi | STOI | residual | speech SI-SDR | worst speech "
        "| speech level | speech STOI | music leak | worst 1 s | mu15 | mu16 |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {label(r)} | {r['mix_sisdr']:.2f} | {r['mix_sisdri']:.2f} | {r['mix_stoi']:.3f} "
            f"| {r['residual']:.2f} | {r['sp_sisdr']:.2f} | {r['sp_worst']:.2f} ({r['sp_worst_id']}) "
            f"| {r['sp_level']:.2f} | {r['sp_stoi']:.3f} | {r['leak']:.2f} | {r['leak_worst']:.2f} "
            f"| {r['mu15']:.2f} | {r['mu16']:.2f} |"
        )
    return head + "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("mix_sisdr", "mixtures: SI-SDR (dB, higher is better)"),
        ("residual", "mixtures: music residual (dB, lower is better)"),
        ("sp_worst", "speech only: worst file, SI-SDR out vs in (dB, higher is better)"),
        ("leak", "music only: leak (dB, lower is better)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    vox = [r for r in rows if r["system"] == "voxsift"]
    floors = sorted({r["floor"] for r in vox}, key=lambda f: -(f if f is not None else 1e9))
    ref = [r for r in rows if r["system"] == "libdeepfilter"]
    for ax, (key, title) in zip(axes.flat, panels):
        for f in floors:
            pts = sorted((r["beta"], r[key]) for r in vox if r["floor"] == f)
            if not pts:
                continue
            xs, ys = zip(*pts)
            name = "floor off" if f is None else f"floor {f:g} dB"
            ax.plot(xs, ys, marker="o", linestyle="-" if f is None else ":", label=name)
        for r in ref:
            if r["floor"] is None:
                ax.axhline(r[key], color="k", linestyle="--", linewidth=1, label="libdeepfilter")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("beta")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Voxsift Live (DFN3): beta and floor over ../shared/eval-audio")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--plot", type=Path)
    a = p.parse_args()
    rows = load(a.out)
    if not rows:
        print(f"no reports under {a.out}", file=sys.stderr)
        return 1
    sys.stdout.write(table(rows))
    if not a.no_plot:
        path = a.plot or a.out / "sweep.png"
        plot(rows, path)
        print(f"\nplot: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
