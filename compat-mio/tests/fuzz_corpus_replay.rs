//! Replays the committed fuzz corpus (`fuzz/corpus/mio_readiness/`) through
//! the fuzz target's model driver, so stable CI runs every seed, on each
//! backend the suite runs on, without libFuzzer or nightly.

use std::fs;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/mio_readiness.rs"]
mod mio_readiness;

use mio_readiness::Coverage;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/mio_readiness");
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn replay_mio_readiness_corpus() {
    let files = corpus();
    assert!(!files.is_empty(), "no corpus files to replay");
    let mut total = Coverage::default();
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let replay = catch_unwind(AssertUnwindSafe(|| {
            mio_readiness::run(&data);
            mio_readiness::run_with_coverage(&data)
        }));
        match replay {
            Ok(coverage) => total += coverage,
            Err(panic) => {
                eprintln!("corpus file {} disagrees with the model", path.display());
                resume_unwind(panic);
            }
        }
    }
    eprintln!("replayed {} corpus files: {total:?}", files.len());

    // The seeds, taken together, must keep reaching every branch the
    // driver counts; a change that silently stops reaching one fails here.
    let Coverage {
        ops,
        registry_ok,
        registry_refused,
        readable_edges,
        writable_edges,
        dropped_registered,
        full_polls,
        wakes,
    } = total;
    for (what, n) in [
        ("operations", ops),
        ("successful registry calls", registry_ok),
        ("refused registry calls", registry_refused),
        ("owed readable edges", readable_edges),
        ("owed writable edges", writable_edges),
        ("registered sources dropped", dropped_registered),
        ("polls that filled Events", full_polls),
        ("waker events", wakes),
    ] {
        assert!(n > 0, "the corpus no longer reaches {what}: {total:?}");
    }
}
