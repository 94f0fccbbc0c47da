#!/usr/bin/env python3
"""Put one audio file on a track of a saved Ardour 7 session, by editing its XML.

Ardour 7.3's Lua bindings have no headless import (`Editor:do_import` needs the
GUI), so this writes what an import would have written: a <Source> for the file
(copied into interchange/<folder>/audiofiles/), a whole-file <Region>, a region at
0 in the track's playlist (fades off, so no 64-sample default fade), and the
session range [0, length). The session must be closed (not open in Ardour).

Usage: inject_region.py SESSION_DIR SESSION_NAME TRACK_NAME AUDIO.wav
"""
import shutil
import sys
import wave
import xml.etree.ElementTree as ET
from pathlib import Path

SUPERCLOCK_PER_SECOND = 282240000  # Temporal::superclock_ticks_per_second in Ardour 7.3


def wav_info(path):
    """(frames, channels, rate) of a WAV (PCM or IEEE float; `wave` can't open float, so parse)."""
    data = Path(path).read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", "not a RIFF/WAVE file"
    pos, fmt, nbytes = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"fmt ":
            ch = int.from_bytes(data[pos + 10:pos + 12], "little")
            rate = int.from_bytes(data[pos + 12:pos + 16], "little")
            align = int.from_bytes(data[pos + 20:pos + 22], "little")
            fmt = (ch, rate, align)
        elif cid == b"data":
            nbytes = size
            break
        pos += 8 + size + (size & 1)
    ch, rate, align = fmt
    return nbytes // align, ch, rate


def main():
    sdir, sname, track, audio = sys.argv[1:5]
    sdir = Path(sdir)
    state = sdir / f"{sname}.ardour"
    frames, channels, rate = wav_info(audio)
    assert channels == 1, "this helper handles mono files (one source)"

    tree = ET.parse(state)
    root = tree.getroot()
    srate = int(root.get("sample-rate"))
    assert srate == rate, f"file rate {rate} != session rate {srate}"
    sc_per_sample = SUPERCLOCK_PER_SECOND // srate
    length = f"a{frames * sc_per_sample}"

    next_id = int(root.get("id-counter"))

    def new_id():
        nonlocal next_id
        next_id += 1
        return str(next_id)

    fname = Path(audio).name
    # Ardour 7.3 names interchange/<X> after the session *folder*, not the session, and
    # stops with a fatal error (a hang in the session utilities) when interchange/ holds
    # more than one folder; so reuse the one that is there.
    inter = sdir / "interchange"
    subdirs = [d for d in inter.iterdir() if d.is_dir() and not d.name.startswith(".")] \
        if inter.is_dir() else []
    assert len(subdirs) <= 1, f"{inter} holds more than one folder: Ardour would refuse it"
    sub = subdirs[0] if subdirs else inter / sdir.resolve().name
    dest = sub / "audiofiles" / fname
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(audio, dest)

    src_id = new_id()
    sources = root.find("Sources")
    ET.SubElement(sources, "Source", {
        "name": fname, "type": "audio", "flags": "", "id": src_id,
        "natural-position": "a0", "channel": "0", "origin": "", "gain": "1",
    })

    base = Path(fname).stem
    common = {
        "muted": "0", "opaque": "1", "locked": "0", "video-locked": "0",
        "import": "1", "external": "0", "sync-marked": "0", "left-of-split": "0",
        "right-of-split": "0", "hidden": "0", "position-locked": "0",
        "valid-transients": "0", "start": "a0", "length": f"{length}@a0",
        "sync-position": "a0", "ancestral-start": "a0", "ancestral-length": "a0@a0",
        "stretch": "1", "shift": "1", "layering-index": "0", "tags": "",
        "contents": "0", "envelope-active": "0", "default-fade-in": "0",
        "default-fade-out": "0", "fade-in-active": "0", "fade-out-active": "0",
        "scale-amplitude": "1", "type": "audio", "first-edit": "nothing",
        "source-0": src_id, "master-source-0": src_id, "channels": "1",
    }
    regions = root.find("Regions")
    ET.SubElement(regions, "Region", {**common, "name": base, "automatic": "1",
                                      "whole-file": "1", "id": new_id()})

    route = next(r for r in root.find("Routes") if r.get("name") == track)
    pl_id = route.get("audio-playlist")
    playlist = next(p for p in root.find("Playlists") if p.get("id") == pl_id)
    reg = ET.SubElement(playlist, "Region", {**common, "name": f"{base}.1", "automatic": "0",
                                             "whole-file": "0", "id": new_id()})
    ET.SubElement(reg, "Envelope", {"default": "yes"})

    locs = root.find("Locations")
    for loc in list(locs):
        if "IsSessionRange" in loc.get("flags", ""):
            locs.remove(loc)
    ET.SubElement(locs, "Location", {
        "id": new_id(), "name": "session", "start": "a0", "end": length,
        "flags": "IsSessionRange", "locked": "0", "timestamp": "0", "cue": "0",
    })

    root.set("id-counter", str(next_id + 1))
    tree.write(state, encoding="UTF-8", xml_declaration=True)
    print(f"injected {fname}: {frames} samples @ {srate} Hz on track '{track}' (playlist {pl_id})")


if __name__ == "__main__":
    main()
