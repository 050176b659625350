//! Replays a committed corpus on stable: shared by the
//! `fuzz_corpus_replay` tests of `packets`, `reactor` and `compat-mio`,
//! which include this file with `#[path]` beside the driver they replay.
//! (Crates of two editions format it, so it imports nothing whose order
//! their rustfmt styles would sort differently.)

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

/// Runs every file of `fuzz/corpus/<target>/` through `run`, in name order,
/// and returns the sum of what they exercised. Panics, naming the file,
/// where `run` does; panics if the corpus is empty.
pub fn replay<C>(target: &str, run: impl Fn(&[u8]) -> C) -> C
where
    C: Default + std::ops::AddAssign + std::fmt::Debug,
{
    let files = corpus(target);
    assert!(!files.is_empty(), "no corpus files to replay for {target}");
    let mut total = C::default();
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        match panic::catch_unwind(panic::AssertUnwindSafe(|| run(&data))) {
            Ok(coverage) => total += coverage,
            Err(payload) => {
                eprintln!("corpus file {} disagrees with the model", path.display());
                panic::resume_unwind(payload);
            }
        }
    }
    eprintln!("replayed {} {target} corpus files: {total:?}", files.len());
    total
}

fn corpus(target: &str) -> Vec<PathBuf> {
    // Each including crate sits one level below the workspace root.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}
