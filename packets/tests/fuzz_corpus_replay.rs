//! Replays the committed fuzz corpus (`fuzz/corpus/packets_model/`) through
//! the fuzz target's model driver, so stable CI runs every seed without
//! libFuzzer or nightly.
//!
//! Under `--cfg loom` a `CountedSignal` only works inside `loom::model`, so
//! this file is compiled out there.
#![cfg(not(loom))]

#[path = "../../fuzz/src/packets_model.rs"]
mod packets_model;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

use packets_model::Coverage;

#[test]
fn replay_packets_model_corpus() {
    let total = replay::replay("packets_model", |data| {
        packets_model::run(data);
        packets_model::run_with_coverage(data)
    });

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
        lane_raises,
        double_wakes,
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
        ("raises through a lane hint", lane_raises),
        ("double wake-ups a lane allows", double_wakes),
    ] {
        assert!(n > 0, "the corpus never reaches: {what}");
    }
}
