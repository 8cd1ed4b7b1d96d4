//! Debian kernel images, fetched with apt from a private sources list (the
//! system's sources stay untouched) and cached under
//! `/var/cache/sensor/kernels`, so a fresh checkout reuses them.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

const DIR: &str = "/var/cache/sensor/kernels";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const MIRROR: &str = "http://deb.debian.org/debian";
/// The cloud flavour: small, virtio drivers, BTF like the others.
const META: &str = "linux-image-cloud-amd64";

/// One kernel of the matrix: the Debian suite whose cloud kernel it is.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    pub label: &'static str,
    pub suite: &'static str,
}

pub const KERNELS: [Kernel; 4] = [
    Kernel {
        label: "5.10",
        suite: "bullseye",
    },
    Kernel {
        label: "6.1",
        suite: "bookworm",
    },
    Kernel {
        label: "6.12",
        suite: "trixie",
    },
    Kernel {
        label: "7.x",
        suite: "trixie-backports",
    },
];

/// The cached `vmlinuz` of `k`, downloading it the first time.
pub fn vmlinuz(k: &Kernel) -> Result<PathBuf> {
    let dir = Path::new(DIR).join(k.suite);
    if let Some(found) = cached(&dir) {
        return Ok(found);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let apt = Apt::new()?;
    let image = apt.image_package(k.suite)?;
    let version = image.trim_start_matches("linux-image-");
    // From 7.x the image package only depends on `linux-binary-VERSION`,
    // which holds the kernel.
    for package in [image.clone(), format!("linux-binary-{version}")] {
        let deb = apt.download(&package, &dir)?;
        let found = extract_vmlinuz(&deb, &dir, version);
        let _ = std::fs::remove_file(&deb);
        if let Some(path) = found? {
            eprintln!("kernels: {} {} -> {}", k.suite, package, path.display());
            return Ok(path);
        }
    }
    bail!(
        "no vmlinuz in {image} or its linux-binary package ({})",
        k.suite
    )
}

fn cached(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// `vmlinuz-VERSION` out of a .deb (at `boot/vmlinuz-*` or
/// `usr/lib/modules/*/vmlinuz`), or `None` when it holds none.
fn extract_vmlinuz(deb: &Path, dir: &Path, version: &str) -> Result<Option<PathBuf>> {
    let listing = crate::setup::output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let Some(member) = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .find(|p| p.starts_with("./boot/vmlinuz-") || p.ends_with("/vmlinuz"))
    else {
        return Ok(None);
    };
    let tmp = dir.join("extract");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' '{member}'",
        deb.display(),
        tmp.display()
    );
    crate::run(Command::new("sh").args(["-c", &script]))?;
    let out = dir.join(format!("vmlinuz-{version}"));
    std::fs::rename(tmp.join(member), &out)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(Some(out))
}

/// apt-get and apt-cache with their own sources, lists and cache.
struct Apt {
    options: Vec<String>,
}

impl Apt {
    fn new() -> Result<Apt> {
        let root = Path::new(DIR).join("apt");
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let sources = root.join("sources.list");
        let lines: String = ["bullseye", "bookworm", "trixie", "trixie-backports"]
            .iter()
            .map(|s| format!("deb [signed-by={KEYRING}] {MIRROR} {s} main\n"))
            .collect();
        std::fs::write(&sources, lines)?;
        let options = [
            format!("Dir::Etc::SourceList={}", sources.display()),
            "Dir::Etc::SourceParts=/dev/null".into(),
            format!("Dir::State::Lists={}", root.join("lists").display()),
            format!("Dir::Cache={}", root.join("cache").display()),
            "Dir::State::status=/dev/null".into(),
            // Downloads land in a root-owned cache directory.
            "APT::Sandbox::User=root".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        let apt = Apt { options };
        crate::run(
            Command::new("apt-get")
                .args(&apt.options)
                .args(["update", "-qq"]),
        )?;
        Ok(apt)
    }

    /// The versioned image package the suite's cloud meta-package depends on.
    fn image_package(&self, suite: &str) -> Result<String> {
        let show = crate::setup::output(
            Command::new("apt-cache")
                .args(&self.options)
                .args(["show", &format!("{META}/{suite}")]),
        )?;
        show.lines()
            .filter_map(|l| l.strip_prefix("Depends:"))
            .flat_map(|d| d.split(','))
            .map(|d| d.split_whitespace().next().unwrap_or(""))
            .find(|p| p.starts_with("linux-image-"))
            .map(String::from)
            .with_context(|| format!("{META}/{suite} depends on no linux-image package"))
    }

    fn download(&self, package: &str, dir: &Path) -> Result<PathBuf> {
        crate::run(
            Command::new("apt-get")
                .current_dir(dir)
                .args(&self.options)
                .args(["download", "-qq", package]),
        )?;
        std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
                })
            })
            .with_context(|| format!("apt-get download {package} left no .deb"))
    }
}
