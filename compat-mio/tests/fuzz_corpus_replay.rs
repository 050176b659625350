//! Replays the committed fuzz corpus (`fuzz/corpus/mio_readiness/`) through
//! the fuzz target's model driver, so stable CI runs every seed, on each
//! backend the suite runs on, without libFuzzer or nightly.

#[path = "../../fuzz/src/mio_readiness.rs"]
mod mio_readiness;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

use mio_readiness::Coverage;

#[test]
fn replay_mio_readiness_corpus() {
    let total = replay::replay("mio_readiness", |data| {
        mio_readiness::run(data);
        mio_readiness::run_with_coverage(data)
    });

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
