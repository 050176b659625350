//! Replays the committed fuzz corpus (`fuzz/corpus/reactor_ops/`) through
//! the fuzz target's model driver, so stable CI runs every seed, on each
//! backend the suite runs on, without libFuzzer or nightly.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/reactor_ops.rs"]
mod reactor_ops;

use reactor_ops::Coverage;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/reactor_ops");
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn replay_reactor_ops_corpus() {
    let files = corpus();
    assert!(!files.is_empty(), "no corpus files to replay");
    let mut total = Coverage::default();
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let replay = catch_unwind(AssertUnwindSafe(|| {
            reactor_ops::run(&data);
            reactor_ops::run_with_coverage(&data)
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
        recv_bytes,
        buffer_bytes,
        sends,
        cancelled_live,
        cancelled_done,
        dropped_busy,
        multishot_ends,
        timeouts,
    } = total;
    for (what, n) in [
        ("operations", ops),
        ("bytes through one-shot recvs", recv_bytes),
        ("bytes through provided buffers", buffer_bytes),
        ("completed sends", sends),
        ("cancels of live ops", cancelled_live),
        ("cancels of finished ops", cancelled_done),
        ("registrations dropped busy", dropped_busy),
        ("multishot ends", multishot_ends),
        ("timeouts", timeouts),
    ] {
        assert!(n > 0, "the corpus no longer reaches {what}: {total:?}");
    }
}
