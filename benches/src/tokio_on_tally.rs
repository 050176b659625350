//! The `tokio-on-tally` engine: the tokio cases of W3, W4 and the footprint,
//! run by a second binary, `tokio-on-tally`, built from
//! `benches/tokio-on-tally/` with mio patched to compat-mio. One binary
//! cannot link two `mio` packages, so `compare` (which links the real mio)
//! starts that binary for each run, and the child ([`crate::child`]) opens
//! its own measuring [`Window`](crate::harness::Window) around the same code
//! the `tokio` engine runs. Process start-up and the child's set-up are
//! outside the window, as they are for every engine. This module is the
//! parent's side: building the child and reading what it prints.
//!
//! `compare` builds the child on first use (`cargo build --release` of
//! `benches/tokio-on-tally`, into the same target directory; a no-op when
//! it is fresh). If that fails, the engine's cases fail with a note.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::{Case, Engine, Run};
use crate::report::Footprint;

/// The child binary, built on first call; `Err` says why it is missing.
fn binary() -> Result<&'static Path, &'static str> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(build).as_deref().map_err(String::as_str)
}

fn build() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("TOKIO_ON_TALLY_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // compare runs from <target>/release/compare.
    let profile_dir = exe.parent().ok_or("no directory for compare")?;
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tokio-on-tally/Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("compare: building the tokio-on-tally engine ({})", manifest.display());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building {} failed ({status})", manifest.display()));
    }
    let bin = target_dir.join("release/tokio-on-tally");
    if bin.exists() { Ok(bin) } else { Err(format!("{} not built", bin.display())) }
}

/// Runs the child once and returns the line it printed after `tag`.
fn child(args: &[&str], tag: &str) -> io::Result<Vec<String>> {
    let bin = binary().map_err(io::Error::other)?;
    let out = Command::new(bin).args(args).stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "tokio-on-tally {args:?} exited with {}",
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(tag))
        .ok_or_else(|| io::Error::other(format!("tokio-on-tally said {text:?}")))?;
    Ok(line.split_whitespace().map(str::to_string).collect())
}

fn parse<T: std::str::FromStr>(field: Option<&String>) -> io::Result<T> {
    field
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other("tokio-on-tally printed a malformed line"))
}

/// The `tokio-on-tally` case of `workload` (`"W3"` or `"W4"`). The child is
/// built when the case first runs, so a run that leaves the engine out
/// (`--engines`) does not build it; if the build fails, the case fails in
/// its warm-up and the harness notes why.
pub fn case(workload: &'static str) -> Case {
    Case::new(Engine::TokioOnTally, move |n| {
        let f = child(&["--run", workload, &n.to_string()], "run ")?;
        let cpu = f.get(3).filter(|c| *c != "-").map(|c| parse(Some(c))).transpose()?;
        Ok(Run {
            events: parse(f.first())?,
            elapsed: Duration::from_nanos(parse(f.get(1))?),
            allocs: parse(f.get(2))?,
            cpu: cpu.map(Duration::from_nanos),
        })
    })
}

/// The footprint of `n` idle `AsyncFd` registrations on tokio-on-tally.
///
/// # Errors
///
/// The child is missing or failed.
pub fn footprint(n: usize) -> io::Result<Footprint> {
    let f = child(&["--footprint", &n.to_string()], "footprint ")?;
    let kernel = f.get(2).filter(|k| *k != "-").map(|k| parse(Some(k))).transpose()?;
    Ok(Footprint {
        n: parse(f.first())?,
        heap: parse(f.get(1))?,
        kernel,
        what: format!("{} (mio patched to compat-mio)", f.get(3..).unwrap_or_default().join(" ")),
    })
}
