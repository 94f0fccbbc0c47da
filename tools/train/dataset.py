"""Builds Voxsift's separator training set from pinned Debian packages (`cargo xtask dataset`).

For every package of the list given on the command line (one `name=version|role|split|how|licence`
argument each, checked against the reserved list by the xtask first), this downloads the .deb
with `apt-get download name=version` into CACHE/debs, extracts it with `dpkg-deb -x`, checks
that usr/share/doc/<name>/copyright exists and names no non-commercial / no-derivatives
terms (the licence string itself was read from that file by hand and is pinned in
xtask/src/dataset.rs), decodes its audio with sox to 48 kHz 16-bit
WAV under OUT/audio/<role>/<package>/ (speech: mono; music and noise: the file's channels, at
most 2), and writes the manifest (TSV) with one row per WAV.

`how` says where the audio is: `files` (the package's own wav/ogg/gsm files) or
`festival:<voice>` (the package is a Festival voice; sentences from the GPL-3 text shipped with
festival's own licence files are rendered with it, see TEXT_PACKAGE).

Needs: apt-get, dpkg-deb, sox (with libsox-fmt-all for ogg and gsm) and festival on PATH.
"""

import argparse
import concurrent.futures as cf
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

# Licences that allow training and redistribution of a trained model (checked against the
# `License:` fields of the package's machine-readable copyright file, or its text).
FREE = re.compile(
    r"\b(GPL|LGPL|CC-BY(-SA)?|CC0|MIT|Expat|BSD|public[ -]domain|Artistic|Apache|X11|"
    r"OFL|Zlib|festival|CMU|ISC|Sun|custom-free)\b",
    re.I,
)
NONFREE = re.compile(r"-NC\b|-ND\b|non-?commercial|no-?deriv", re.I)

AUDIO_EXT = {".wav", ".ogg", ".gsm", ".flac", ".mp3"}

# Text for the Festival voices: sentences of festival's own copyright file and of these
# licence texts (from Debian's base-files, present on every Debian system).
TEXT_FILES = [
    "/usr/share/common-licenses/GPL-3",
    "/usr/share/common-licenses/Apache-2.0",
    "/usr/share/common-licenses/MPL-2.0",
]

FESTIVAL_VOICES = {
    "kal_diphone": ("english/kal_diphone", "festvox/kal_diphone.scm", "voice_kal_diphone"),
    "ked_diphone": ("english/ked_diphone", "festvox/ked_diphone.scm", "voice_ked_diphone"),
    "cmu_us_slt_arctic_hts": (
        "us/cmu_us_slt_arctic_hts",
        "festvox/cmu_us_slt_arctic_hts.scm",
        "voice_cmu_us_slt_arctic_hts",
    ),
}


def sh(*cmd, cwd=None):
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(cache, name, version):
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    quoted = version.replace(":", "%3a")
    deb = debs / f"{name}_{quoted}_all.deb"
    if not deb.exists():
        sh("apt-get", "download", f"{name}={version}", cwd=debs)
    if not deb.exists():
        found = sorted(debs.glob(f"{name}_{quoted}_*.deb"))
        if not found:
            sys.exit(f"dataset: apt-get download {name}={version} wrote no .deb")
        deb = found[0]
    root = cache / "x" / name / version
    if not (root / ".done").exists():
        root.mkdir(parents=True, exist_ok=True)
        sh("dpkg-deb", "-x", str(deb), str(root))
        (root / ".done").write_text("")
    return deb, root


def licence(root, name, declared):
    path = root / "usr/share/doc" / name / "copyright"
    if not path.exists():
        sys.exit(f"dataset: {name}: no copyright file; refusing it")
    text = path.read_text(errors="replace")
    bad = re.search(r".*(non-?commercial|no-?deriv|\bCC-BY-NC|\bCC-BY-ND).*", text, re.I)
    if bad and "reviewed:" not in declared:
        sys.exit(f"dataset: {name}: its copyright file says `{bad.group(0).strip()}`; refusing it")
    if NONFREE.search(declared.split("reviewed:")[0]) or not FREE.search(declared):
        sys.exit(f"dataset: {name}: licence `{declared}` does not allow training; refusing it")
    return declared


def decode(src, dst, mono):
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp.wav")
    # -R: sox's dither noise from a fixed seed, so that the same package gives the same bytes
    # (and sha256) on every run.
    cmd = ["sox", "-R", "-q", "-V1", "-G", str(src), "-e", "signed-integer", "-b", "16", str(tmp)]
    cmd += ["remix", "-"] if mono else []
    cmd += ["rate", "-v", "48000"]
    subprocess.run(cmd, check=True)
    tmp.replace(dst)


def info(path):
    out = subprocess.run(["soxi", "-D", str(path)], check=True, capture_output=True, text=True)
    ch = subprocess.run(["soxi", "-c", str(path)], check=True, capture_output=True, text=True)
    return float(out.stdout), int(ch.stdout)


def sentences():
    text = []
    for f in TEXT_FILES:
        t = Path(f).read_text(errors="replace")
        t = re.sub(r"\s+", " ", t)
        for s in re.split(r"(?<=[.;:!?])\s+", t):
            s = re.sub(r"[^A-Za-z0-9 ,.;:'!?()-]", " ", s).strip()
            if 20 <= len(s) <= 400 and sum(c.isalpha() for c in s) > 0.6 * len(s):
                text.append(s)
    return text


def festival_render(cache, voices_root, lex_root, voice, lines, dst_dir, per_file=4):
    sub, scm, fn = FESTIVAL_VOICES[voice]
    vdir = voices_root / sub
    dst_dir.mkdir(parents=True, exist_ok=True)
    script = [
        f'(set! lexdir "{lex_root}/")',
        f'(set! pos_model_dir "{lex_root}/")',
        '(load (path-append datadir "lexicons.scm"))',
        '(load (path-append datadir "pos.scm"))',
        f"(set! voice-locations (list (cons '{voice} \"{vdir}/\")))",
        f'(load "{vdir}/{scm}")',
        f"({fn})",
    ]
    raw = []
    for i in range(0, len(lines), per_file):
        chunk = " ".join(lines[i : i + per_file]).replace("\\", " ").replace('"', " ")
        out = cache / "festival" / voice / f"{i // per_file:04d}.wav"
        out.parent.mkdir(parents=True, exist_ok=True)
        raw.append(out)
        if not out.exists():
            script.append(f'(utt.save.wave (SynthText "{chunk}") "{out}" \'riff)')
    path = cache / "festival" / f"{voice}.scm"
    path.write_text("\n".join(script) + "\n")
    subprocess.run(["festival", "-b", str(path)], check=True, capture_output=True)
    return raw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--manifest", required=True, type=Path)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("packages", nargs="+")
    a = ap.parse_args()
    out, cache = a.out.resolve(), a.cache.resolve()

    # Festival needs a lexicon: the pinned festlex packages, extracted like the voices.
    specs = [p.split("|") for p in a.packages]
    rows = []
    jobs = []
    lines = sentences()
    voices = [s for s in specs if s[3].startswith("festival:")]
    lex_root = cache / "festlex"
    for spec in specs:
        nv, role, split, how, declared = spec
        name, version = nv.split("=", 1)
        deb, root = fetch(cache, name, version)
        lic = licence(root, name, declared)
        print(f"{name} {version}: {lic}", flush=True)
        if how == "lexicon":
            lex_root.mkdir(parents=True, exist_ok=True)
            for f in (root / "usr/share/festival/dicts").rglob("*"):
                if f.is_file():
                    dst = lex_root / f.relative_to(root / "usr/share/festival/dicts")
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if not dst.exists():
                        dst.symlink_to(f)
            continue
        if how.startswith("festival:"):
            voice = how.split(":", 1)[1]
            # Each voice reads a different slice of the sentences (no shared text).
            k = [s[3] for s in voices].index(how)
            mine = lines[k :: len(voices)]
            raw = festival_render(
                cache, root / "usr/share/festival/voices", lex_root, voice, mine,
                out / "tmp",
            )
            for r in raw:
                jobs.append((name, version, lic, role, split, voice, r, out / "audio" / role / name / r.name, True))
            continue
        for src in sorted(root.rglob("*")):
            if not src.is_file() or src.suffix.lower() not in AUDIO_EXT:
                continue
            rel = src.relative_to(root)
            r = role
            if how == "files-music-sounds":
                # hyperrogue: music/ is music, sounds/ is game sound effects (noise).
                r = "noise" if "/sounds/" in str(rel) else "music"
            speaker = {"speech": name.replace("asterisk-prompt-", "")}.get(r, "")
            dst = out / "audio" / r / name / str(rel.with_suffix(".wav")).removeprefix("usr/share/").replace("/", "__")
            jobs.append((name, version, lic, r, split, speaker, src, dst, r == "speech"))

    def work(j):
        name, version, lic, role, split, speaker, src, dst, mono = j
        if not dst.exists():
            decode(src, dst, mono)
        dur, ch = info(dst)
        return (name, version, lic, role, speaker, split, ch, f"{dur:.3f}", sha256(dst), str(dst.relative_to(out)))

    with cf.ThreadPoolExecutor(a.jobs) as ex:
        rows = list(ex.map(work, jobs))
    rows.sort(key=lambda r: r[-1])
    header = ["package", "version", "license", "role", "speaker", "split", "channels", "seconds", "sha256", "path"]
    a.manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(a.manifest, "w") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")
    # Summary: hours and speakers per role and split.
    summary = {}
    for r in rows:
        key = (r[3], r[5])
        s = summary.setdefault(key, [0, 0.0, set(), set()])
        s[0] += 1
        s[1] += float(r[7])
        s[2].add(r[0])
        if r[4]:
            s[3].add(r[4])
    for (role, split), (n, secs, pk, spk) in sorted(summary.items()):
        print(f"{role:6} {split:5} {n:5} files {secs / 3600:6.2f} h  {len(pk)} packages  {len(spk)} speakers")
    print(f"manifest: {a.manifest} ({len(rows)} files)")


if __name__ == "__main__":
    main()
