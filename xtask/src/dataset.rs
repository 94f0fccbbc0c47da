//! `cargo xtask dataset`: the separator's training set, built from pinned Debian packages.
//!
//! The package list ([`PACKAGES`]) is pinned by version; `tools/train/dataset.py` downloads
//! each with `apt-get download`, extracts it with `dpkg-deb -x`, decodes the audio with sox
//! (Festival voices are rendered with festival first) to 48 kHz WAV and writes the manifest
//! `tools/train/manifest.tsv`. Packages kept for held-out evaluation ([`RESERVED`]) are
//! refused, and so is anything from the evaluation folder.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the audio comes from in a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// The package's own audio files.
    Files,
    /// hyperrogue-music: `music/` is music, `sounds/` is game sounds (noise).
    FilesMusicSounds,
    /// A Festival lexicon, needed to render the voices.
    Lexicon,
    /// A Festival voice (its name): sentences are rendered with it.
    Festival(&'static str),
}

/// One pinned package: name, version, role (`speech`, `music`, `noise`, `tool`), split
/// (`train` or `valid`, by package) and the licence read from its `copyright` file.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
    pub role: &'static str,
    pub split: &'static str,
    pub how: How,
    pub license: &'static str,
}

const fn pkg(
    name: &'static str,
    version: &'static str,
    role: &'static str,
    split: &'static str,
    how: How,
    license: &'static str,
) -> Package {
    Package {
        name,
        version,
        role,
        split,
        how,
        license,
    }
}

/// The training set (Debian 12 "bookworm" versions).
pub const PACKAGES: &[Package] = &[
    pkg(
        "festlex-cmu",
        "2.4-2",
        "tool",
        "train",
        How::Lexicon,
        "CMU-MIT-like (CMUDICT 0.4, free)",
    ),
    pkg(
        "festlex-poslex",
        "2.4-1",
        "tool",
        "train",
        How::Lexicon,
        "MIT-like (Edinburgh, free; reviewed: its non-commercial note is about festlex-oald)",
    ),
    pkg(
        "asterisk-prompt-it-menardi-wav",
        "1:1.4.22+mm20110907-3.1",
        "speech",
        "train",
        How::Files,
        "CC-BY-SA-3.0 / LGPL-2.1",
    ),
    pkg(
        "asterisk-prompt-fr-armelle",
        "20070613-2.2",
        "speech",
        "train",
        How::Files,
        "BSD-like (redistribution and modification permitted)",
    ),
    pkg(
        "asterisk-prompt-es-co",
        "0.20070403-2.1",
        "speech",
        "valid",
        How::Files,
        "GPL-2",
    ),
    pkg(
        "festvox-kallpc16k",
        "2.4-1",
        "speech",
        "train",
        How::Festival("kal_diphone"),
        "MIT-like (Black and Lenzo 1998, free)",
    ),
    pkg(
        "festvox-us-slt-hts",
        "0.2010.10.25-4",
        "speech",
        "train",
        How::Festival("cmu_us_slt_arctic_hts"),
        "BSD-3-clause / EST (free)",
    ),
    pkg(
        "festvox-kdlpc16k",
        "1.4.0-6.1",
        "speech",
        "valid",
        How::Festival("ked_diphone"),
        "MIT-like (festival, free)",
    ),
    pkg(
        "hyperrogue-music",
        "12.0q-1",
        "music",
        "valid",
        How::FilesMusicSounds,
        "CC-BY-SA-3.0 (music) / CC-BY-SA-4.0 (sounds)",
    ),
    pkg(
        "drascula-music",
        "1.0+ds4-2",
        "music",
        "train",
        How::Files,
        "Drascula-License (BSD-like, DFSG-free)",
    ),
    // More training music (2026-12-07): drascula alone is one game's soundtrack; a refiner
    // trained on it alone learnt that music and leaked what did not sound like it.
    pkg(
        "wesnoth-1.16-music",
        "1:1.16.9-1",
        "music",
        "train",
        How::Files,
        "GPL-2+",
    ),
    pkg(
        "planetblupi-music-ogg",
        "1.14.2-3",
        "music",
        "train",
        How::Files,
        "GPL-3+",
    ),
    pkg("asc-music", "1.3-6", "music", "train", How::Files, "GPL-2+"),
];

/// Debian packages kept for held-out evaluation: never downloaded for training. A trailing
/// `*` matches any suffix.
pub const RESERVED: &[&str] = &[
    "alsa-utils",
    "asterisk-core-sounds-*",
    "asterisk-moh-opsound-*",
    "klettres-data",
    "ktuberling-data",
    "lomiri-sounds",
    "singularity-music",
    "sonic-pi-samples",
];

/// Sources of the evaluation folder (`../shared/eval-audio`): refused by name, as a package
/// or a path.
pub const RESERVED_SOURCES: &[&str] = &[
    "eval-audio",
    "librosa",
    "sms-tools",
    "spleeter",
    "inaspeechsegmenter",
    "pyannote",
    "speechbrain",
    "whisper",
    "denoiser",
    "vctk",
];

/// Why `name` may not be used for training, if it may not.
pub fn refusal(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let base = lower.split(['=', '|']).next().unwrap_or("");
    for r in RESERVED {
        let hit = match r.strip_suffix('*') {
            Some(prefix) => base.starts_with(prefix),
            None => base == *r,
        };
        if hit {
            return Some(format!(
                "{name} is reserved for held-out evaluation ({r}); it is never used for training"
            ));
        }
    }
    for s in RESERVED_SOURCES {
        if lower.contains(s) {
            return Some(format!(
                "{name} comes from (or names) an evaluation source ({s}); refusing it"
            ));
        }
    }
    None
}

/// The argument `tools/train/dataset.py` reads for a package.
fn spec(p: &Package) -> String {
    let how = match p.how {
        How::Files => "files".to_string(),
        How::FilesMusicSounds => "files-music-sounds".to_string(),
        How::Lexicon => "lexicon".to_string(),
        How::Festival(v) => format!("festival:{v}"),
    };
    format!(
        "{}={}|{}|{}|{}|{}",
        p.name, p.version, p.role, p.split, how, p.license
    )
}

/// `cargo xtask dataset [--out DIR] [--cache DIR] [--package NAME=VERSION:ROLE:SPLIT]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut out = root.join("data");
    let mut cache: Option<PathBuf> = None;
    let mut packages: Vec<String> = PACKAGES.iter().map(spec).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("dataset: {flag} needs a value"))
        };
        match a.as_str() {
            "--out" => out = std::env::current_dir()?.join(value("--out")?),
            "--cache" => cache = Some(std::env::current_dir()?.join(value("--cache")?)),
            "--package" => {
                // NAME=VERSION:ROLE:SPLIT[:LICENCE], files decoded as they are.
                let v = value("--package")?;
                if let Some(why) = refusal(&v) {
                    bail!("dataset: {why}");
                }
                let mut parts = v.splitn(4, ':');
                let nv = parts.next().unwrap_or_default();
                let (role, split) = (parts.next(), parts.next());
                let (Some(role), Some(split)) = (role, split) else {
                    bail!("dataset: --package wants NAME=VERSION:ROLE:SPLIT[:LICENCE], got {v}");
                };
                let license = parts.next().unwrap_or("see copyright");
                packages.push(format!("{nv}|{role}|{split}|files|{license}"));
            }
            _ => bail!("dataset: unexpected argument {a}"),
        }
    }
    for p in &packages {
        if let Some(why) = refusal(p) {
            bail!("dataset: {why}");
        }
    }
    if let Some(why) = refusal(&out.to_string_lossy()) {
        bail!("dataset: output folder: {why}");
    }
    let cache = cache.unwrap_or_else(|| out.join("cache"));
    for tool in ["apt-get", "dpkg-deb", "sox", "festival"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            bail!(
                "dataset: {tool} is not on PATH (Debian: apt-get install sox libsox-fmt-all festival)"
            );
        }
    }
    let status = Command::new("python3")
        .arg(root.join("tools/train/dataset.py"))
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(&cache)
        .arg("--manifest")
        .arg(root.join("tools/train/manifest.tsv"))
        .args(&packages)
        .status()
        .context("cannot run python3 tools/train/dataset.py")?;
    if !status.success() {
        bail!("tools/train/dataset.py failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_reserved_packages() {
        assert!(refusal("sonic-pi-samples").is_some());
        assert!(refusal("sonic-pi-samples=1:3.2.0-1").is_some());
        assert!(refusal("asterisk-core-sounds-en-wav").is_some());
        assert!(refusal("asterisk-core-sounds-fr-gsm=1.6.1-1").is_some());
        assert!(refusal("asterisk-moh-opsound-wav").is_some());
        assert!(refusal("alsa-utils").is_some());
        assert!(refusal("python3-librosa").is_some());
        assert!(refusal("/work/shared/eval-audio/speech").is_some());
        // Near misses are not reserved.
        assert!(refusal("alsa-utils-extra").is_none());
        assert!(refusal("asterisk-prompt-fr-armelle").is_none());
    }

    #[test]
    fn the_pinned_list_is_clean() {
        for p in PACKAGES {
            assert!(refusal(&spec(p)).is_none(), "{} is reserved", p.name);
            assert!(!p.version.is_empty() && ["train", "valid"].contains(&p.split));
            // What follows `reviewed:` is a note on the copyright file, not the licence.
            let l = p
                .license
                .split("reviewed:")
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            assert!(!l.contains("-nc") && !l.contains("-nd") && !l.contains("non-commercial"));
        }
        // The validation split holds whole packages of speech and of music.
        for role in ["speech", "music"] {
            let valid = PACKAGES
                .iter()
                .filter(|p| p.role == role && p.split == "valid");
            let train = PACKAGES
                .iter()
                .filter(|p| p.role == role && p.split == "train");
            assert!(valid.count() > 0 && train.count() > 0, "{role}");
        }
    }

    #[test]
    fn run_refuses_a_reserved_package_before_downloading() {
        let args = [
            "--package".to_string(),
            "sonic-pi-samples=1:3.2.0-1:music:train".to_string(),
        ];
        let err = run(Path::new("/nonexistent"), &args).unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }
}
