//! `cargo xtask image`: the container image, built here without a Docker
//! engine or a registry, with the same contents as the Dockerfile's runtime
//! stage.
//!
//! The Dockerfile stays the recipe users build with. This reads its last
//! stage (`FROM debian:<suite>-slim`, the `apt-get install` packages, the
//! `COPY` of the binary, `EXPOSE`, `ENTRYPOINT`, `CMD`) and reproduces it:
//! a Debian `<suite>` minbase root file system from Debian's packages
//! (mmdebstrap, with documentation, manuals and locales left out as the slim
//! images do) plus those packages, the release binary at the `COPY`
//! destination, imported into podman with the same entrypoint, command and
//! port. Any other instruction in that stage is an error, so the two cannot
//! drift apart silently.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// The tag the tests run.
pub const TEST_TAG: &str = "localhost/sensor:test";
const CACHE: &str = "/var/cache/sensor/image";

/// The Dockerfile's runtime stage, as far as the image's contents go.
#[derive(Debug, PartialEq, Eq)]
pub struct RuntimeStage {
    pub suite: String,
    pub packages: Vec<String>,
    /// Where the binary goes (`COPY --from=build /sensor DEST`).
    pub binary_dest: String,
    /// `EXPOSE`, `ENTRYPOINT`, `CMD` lines, as written.
    pub changes: Vec<String>,
}

/// Reads the last stage of a Dockerfile.
pub fn parse_dockerfile(text: &str) -> Result<RuntimeStage> {
    // Join continuation lines, drop comments and blank lines.
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .context("the Dockerfile has no FROM")?;
    let from = &lines[last_from];
    let image = from.split_whitespace().nth(1).unwrap_or("");
    let suite = image
        .strip_prefix("debian:")
        .and_then(|t| t.strip_suffix("-slim"))
        .with_context(|| format!("the runtime stage must be FROM debian:<suite>-slim: {from}"))?
        .to_string();
    let mut stage = RuntimeStage {
        suite,
        packages: Vec::new(),
        binary_dest: String::new(),
        changes: Vec::new(),
    };
    for line in &lines[last_from + 1..] {
        let (instr, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instr {
            "RUN" => {
                for cmd in rest.split("&&").map(str::trim) {
                    let words: Vec<&str> = cmd.split_whitespace().collect();
                    match words.as_slice() {
                        ["apt-get", "update"] | ["rm", "-rf", "/var/lib/apt/lists/*"] => {}
                        ["apt-get", "install", args @ ..] => stage.packages.extend(
                            args.iter()
                                .filter(|a| !a.starts_with('-'))
                                .map(|a| a.to_string()),
                        ),
                        _ => bail!("cannot reproduce RUN step {cmd:?} of the Dockerfile"),
                    }
                }
            }
            "COPY" => match rest.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["--from=build", "/sensor", dest] => stage.binary_dest = dest.to_string(),
                _ => bail!("cannot reproduce COPY {rest:?} of the Dockerfile"),
            },
            "EXPOSE" | "ENTRYPOINT" | "CMD" => stage.changes.push(line.clone()),
            _ => bail!("cannot reproduce {instr} of the Dockerfile's runtime stage"),
        }
    }
    if stage.binary_dest.is_empty() {
        bail!("the Dockerfile's runtime stage copies no binary");
    }
    Ok(stage)
}

/// Builds the release agent and the image `tag`.
pub fn build(root: &Path, tag: &str) -> Result<()> {
    crate::setup::image_tools()?;
    let stage = parse_dockerfile(
        &std::fs::read_to_string(root.join("Dockerfile")).context("reading the Dockerfile")?,
    )?;
    crate::cargo(root, &["build", "--release", "-p", "sensor"])?;
    let base = base_rootfs(&stage)?;
    let work = root.join("target/image");
    std::fs::create_dir_all(&work)?;
    let tar = work.join("rootfs.tar");
    std::fs::copy(&base, &tar).with_context(|| format!("copying {}", base.display()))?;
    // The binary, owned by root, appended at its destination.
    let dest = stage.binary_dest.trim_start_matches('/');
    let staging = work.join("add");
    let _ = std::fs::remove_dir_all(&staging);
    let placed = staging.join(dest);
    std::fs::create_dir_all(placed.parent().context("binary destination")?)?;
    std::fs::copy(root.join("target/release/sensor"), &placed)?;
    crate::run(
        Command::new("tar")
            .args(["--append", "--owner=0", "--group=0", "--mode=0755", "-f"])
            .arg(&tar)
            .arg("-C")
            .arg(&staging)
            .arg(dest),
    )?;
    let mut import = Command::new("podman");
    import.arg("import");
    for change in &stage.changes {
        import.args(["--change", change]);
    }
    crate::run(import.arg(&tar).arg(tag))?;
    let _ = std::fs::remove_dir_all(&staging);
    let _ = std::fs::remove_file(&tar);
    eprintln!(
        "image {tag}: debian {} minbase + {} + {}",
        stage.suite,
        stage.packages.join(" "),
        stage.binary_dest
    );
    Ok(())
}

/// The Debian base with the stage's packages, cached by suite and packages.
fn base_rootfs(stage: &RuntimeStage) -> Result<PathBuf> {
    let name = format!("{}-{}.tar", stage.suite, stage.packages.join("+"));
    let path = Path::new(CACHE).join(name);
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(CACHE).with_context(|| format!("creating {CACHE}"))?;
    // mmdebstrap picks its output format by the extension: keep `.tar`.
    let partial = path.with_extension("partial.tar");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--quiet"]);
    if !stage.packages.is_empty() {
        cmd.arg(format!("--include={}", stage.packages.join(",")));
    }
    // What Debian's slim images leave out.
    for excluded in [
        "/usr/share/doc/*",
        "/usr/share/man/*",
        "/usr/share/info/*",
        "/usr/share/locale/*",
    ] {
        cmd.arg(format!("--dpkgopt=path-exclude={excluded}"));
    }
    cmd.arg(&stage.suite).arg(&partial);
    eprintln!(
        "image: building the {} base with mmdebstrap (about 30 s)",
        stage.suite
    );
    crate::run(&mut cmd)?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_dockerfile_is_reproducible() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let text = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
        let stage = parse_dockerfile(&text).unwrap();
        assert_eq!(stage.suite, "bookworm");
        assert_eq!(stage.packages, ["ca-certificates"]);
        assert_eq!(stage.binary_dest, "/usr/local/bin/sensor");
        assert_eq!(stage.changes.len(), 3, "{:?}", stage.changes);
    }

    #[test]
    fn unknown_steps_are_refused() {
        let text = "FROM rust AS build\nRUN make\nFROM debian:bookworm-slim\n\
                    COPY --from=build /sensor /sensor\nRUN curl x | sh\n";
        let e = parse_dockerfile(text).unwrap_err().to_string();
        assert!(e.contains("curl"), "{e}");
        let text = "FROM debian:bookworm-slim\nCOPY --from=build /sensor /s\nUSER 1000\n";
        assert!(parse_dockerfile(text).is_err());
    }
}
