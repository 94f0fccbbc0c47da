//! The platform a bundle is built for: this machine's, or the one `--target` names (a cross
//! build, e.g. `x86_64-pc-windows-gnu` from Linux with Debian's mingw-w64).
//!
//! Everything that depends on the target rather than on the machine running the xtask is
//! here: the ONNX Runtime file names, the wheel to fetch, the VST3 folder name and where the
//! bundles go.

use anyhow::{bail, Context, Result};
use std::env;
use std::path::{Path, PathBuf};

/// An operating system a bundle can be built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// Linux (glibc).
    Linux,
    /// macOS.
    MacOS,
    /// Windows.
    Windows,
}

/// The ONNX Runtime files of one platform's wheel.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeLibs {
    /// The library in the wheel's `onnxruntime/capi/`.
    pub core: &'static str,
    /// The name the loader looks for (a link to, or the same file as, `core`).
    pub link: &'static str,
    /// Extra libraries of the CPU wheel.
    pub cpu_extra: &'static [&'static str],
    /// Extra libraries of the GPU wheel.
    pub gpu_extra: &'static [&'static str],
}

/// The target of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Its operating system.
    pub os: Os,
    /// Its CPU architecture, as Rust names it (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// The target triple when it is not this machine's (a cross build).
    pub cross: Option<String>,
}

impl Platform {
    /// This machine.
    pub fn host() -> Result<Self> {
        let os = match env::consts::OS {
            "linux" => Os::Linux,
            "macos" => Os::MacOS,
            "windows" => Os::Windows,
            other => bail!("Voxsift is not built for {other}"),
        };
        Ok(Self {
            os,
            arch: env::consts::ARCH.to_string(),
            cross: None,
        })
    }

    /// The platform of a target triple; a cross build unless it is this machine's.
    pub fn from_triple(triple: &str) -> Result<Self> {
        let arch = triple
            .split('-')
            .next()
            .filter(|a| !a.is_empty())
            .with_context(|| format!("{triple:?} is not a target triple"))?;
        let os = if triple.contains("-windows") {
            Os::Windows
        } else if triple.contains("-apple-darwin") {
            Os::MacOS
        } else if triple.contains("-linux") {
            Os::Linux
        } else {
            bail!("no bundle layout known for the target {triple}");
        };
        let host = Self::host()?;
        let cross = (host.os != os || host.arch != arch).then(|| triple.to_string());
        Ok(Self {
            os,
            arch: arch.to_string(),
            cross,
        })
    }

    /// The platform that cargo arguments build for: `--target T` / `--target=T`, else this
    /// machine.
    pub fn for_cargo_args(args: &[String]) -> Result<Self> {
        match target_arg(args)? {
            Some(t) => Self::from_triple(&t),
            None => Self::host(),
        }
    }

    /// The ONNX Runtime files of this platform's wheel.
    pub fn runtime_libs(&self) -> RuntimeLibs {
        match self.os {
            Os::Linux => RuntimeLibs {
                core: "libonnxruntime.so.1.31.1",
                link: "libonnxruntime.so",
                cpu_extra: &["libonnxruntime_providers_shared.so"],
                gpu_extra: &["libonnxruntime_providers_cuda.so"],
            },
            Os::MacOS => RuntimeLibs {
                core: "libonnxruntime.1.31.1.dylib",
                link: "libonnxruntime.dylib",
                cpu_extra: &[],
                gpu_extra: &[],
            },
            Os::Windows => RuntimeLibs {
                core: "onnxruntime.dll",
                link: "onnxruntime.dll",
                cpu_extra: &["onnxruntime_providers_shared.dll"],
                gpu_extra: &["onnxruntime_providers_cuda.dll"],
            },
        }
    }

    /// pip's `--platform` tag of this platform's onnxruntime wheel (for a cross build; a
    /// native one lets pip choose).
    pub fn wheel_tag(&self) -> Result<&'static str> {
        Ok(match (self.os, self.arch.as_str()) {
            (Os::Linux, "x86_64") => "manylinux_2_28_x86_64",
            (Os::Linux, "aarch64") => "manylinux_2_28_aarch64",
            (Os::Windows, "x86_64") => "win_amd64",
            (Os::MacOS, "aarch64") => "macosx_14_0_arm64",
            (os, arch) => bail!("no onnxruntime wheel is known for {os:?} on {arch}"),
        })
    }

    /// Where `fetch-runtime` puts `package` (`onnxruntime` or `onnxruntime-gpu`) for this
    /// platform: `runtime/<package>-<version>/` for this machine, with `-<os>-<arch>` after it
    /// for a cross build (the name the plugin also looks for, see `runtime::fetched_dirs`).
    pub fn runtime_dir(&self, root: &Path, package: &str, version: &str) -> PathBuf {
        let name = match self.cross {
            None => format!("{package}-{version}"),
            Some(_) => format!("{package}-{version}-{}-{}", self.os_name(), self.arch),
        };
        root.join("runtime").join(name)
    }

    /// The OS as Rust's `std::env::consts::OS` spells it.
    pub fn os_name(&self) -> &'static str {
        match self.os {
            Os::Linux => "linux",
            Os::MacOS => "macos",
            Os::Windows => "windows",
        }
    }

    /// The VST3 bundle's folder for the binary (`Contents/<this>/`).
    pub fn vst3_arch(&self) -> Result<&'static str> {
        let arch = self.arch.as_str();
        Ok(match self.os {
            Os::MacOS => "MacOS",
            Os::Windows => match arch {
                "x86" => "x86-win",
                "x86_64" => "x86_64-win",
                "aarch64" => "arm_64-win",
                _ => bail!("no VST3 folder name known for Windows on {arch}"),
            },
            Os::Linux => match arch {
                "x86" => "i386-linux",
                "x86_64" => "x86_64-linux",
                "aarch64" => "aarch64-linux",
                "riscv64" => "riscv64-linux",
                _ => bail!("no VST3 folder name known for Linux on {arch}"),
            },
        })
    }

    /// The file name cargo gives the `cdylib` of `package`.
    pub fn library_file(&self, package: &str) -> String {
        let name = package.replace('-', "_");
        match self.os {
            Os::Linux => format!("lib{name}.so"),
            Os::MacOS => format!("lib{name}.dylib"),
            Os::Windows => format!("{name}.dll"),
        }
    }

    /// The file name cargo gives the binary `name`.
    pub fn exe_file(&self, name: &str) -> String {
        match self.os {
            Os::Windows => format!("{name}.exe"),
            _ => name.to_string(),
        }
    }
}

/// The value of `--target T` or `--target=T` in cargo arguments (the last one wins, as in
/// cargo).
pub fn target_arg(args: &[String]) -> Result<Option<String>> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--target" {
            found = Some(it.next().context("--target needs a target triple")?.clone());
        } else if let Some(t) = a.strip_prefix("--target=") {
            found = Some(t.to_string());
        }
    }
    Ok(found)
}

/// The cargo profile folder that cargo arguments build into (`debug`, `release` or the
/// `--profile` name), as nice-plug-xtask reads it.
pub fn profile_dir(args: &[String]) -> String {
    let mut dir = "debug".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--release" {
            dir = "release".into();
        } else if a == "--profile" {
            if let Some(p) = it.next() {
                dir = if p == "dev" {
                    "debug".into()
                } else {
                    p.clone()
                };
            }
        } else if let Some(p) = a.strip_prefix("--profile=") {
            dir = if p == "dev" {
                "debug".into()
            } else {
                p.to_string()
            };
        }
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_windows_triple_is_a_cross_build_with_the_windows_layout() {
        let p = Platform::from_triple("x86_64-pc-windows-gnu").expect("known triple");
        assert_eq!(p.os, Os::Windows);
        assert_eq!(p.arch, "x86_64");
        if !cfg!(windows) {
            assert_eq!(p.cross.as_deref(), Some("x86_64-pc-windows-gnu"));
        }
        assert_eq!(p.vst3_arch().expect("x86_64"), "x86_64-win");
        assert_eq!(p.wheel_tag().expect("x86_64"), "win_amd64");
        assert_eq!(p.runtime_libs().link, "onnxruntime.dll");
        assert_eq!(p.library_file("voxsift"), "voxsift.dll");
        assert_eq!(p.exe_file("voxsift"), "voxsift.exe");
    }

    #[test]
    fn the_target_and_profile_are_read_from_cargo_arguments() {
        let a = args(&[
            "--release",
            "--target",
            "x86_64-pc-windows-gnu",
            "--features",
            "x",
        ]);
        assert_eq!(
            target_arg(&a).expect("well formed").as_deref(),
            Some("x86_64-pc-windows-gnu")
        );
        assert_eq!(profile_dir(&a), "release");
        let a = args(&["--target=aarch64-apple-darwin", "--profile", "bench"]);
        assert_eq!(
            target_arg(&a).expect("well formed").as_deref(),
            Some("aarch64-apple-darwin")
        );
        assert_eq!(profile_dir(&a), "bench");
        assert_eq!(profile_dir(&args(&[])), "debug");
        assert!(target_arg(&args(&["--target"])).is_err());
        assert!(Platform::from_triple("wasm32-unknown-unknown").is_err());
    }

    #[test]
    fn the_host_builds_natively() {
        let host = Platform::host().expect("a supported host");
        assert_eq!(host.cross, None);
        assert_eq!(
            Platform::for_cargo_args(&args(&["--release"])).expect("no target"),
            host
        );
    }
}
