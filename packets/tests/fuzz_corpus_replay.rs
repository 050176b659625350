//! Replays the committed fuzz corpus (`fuzz/corpus/packets_model/`) through
//! the fuzz target's model driver, so stable CI runs every seed without
//! libFuzzer or nightly.
//!
//! Under `--cfg loom` a `CountedSignal` only works inside `loom::model`, so
//! this file is compiled out there.
#![cfg(not(loom))]

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/packets_model.rs"]
mod packets_model;

use packets_model::Coverage;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/packets_model");
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn replay_packets_model_corpus() {
    let files = corpus();
    assert!(!files.is_empty(), "no corpus files to replay");
    let mut total = Coverage::default();
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let replay = catch_unwind(AssertUnwindSafe(|| {
            packets_model::run(&data);
            packets_model::run_with_coverage(&data)
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

    // The seeds, taken together, must keep reaching every branch of the
    // model; a change to the encoding that silently stops reaching one
    // fails here.
    let Coverage {
        ops,
        wakes,
        coalesced,
        saturated_words,
        queued,
        folds,
        folds_past_other_keys,
        saturated_folds,
        refused_signals,
        refused_others,
        raised_back,
        drains,
    } = total;
    for (what, n) in [
        ("ops", ops),
        ("wakes", wakes),
        ("coalesced raises", coalesced),
        ("saturated words", saturated_words),
        ("queued pushes", queued),
        ("folds", folds),
        ("folds past other keys", folds_past_other_keys),
        ("saturated folds", saturated_folds),
        ("refused signal packets", refused_signals),
        ("refused other packets", refused_others),
        ("cranks raised back", raised_back),
        ("drains", drains),
    ] {
        assert!(n > 0, "the corpus never reaches: {what}");
    }
}
