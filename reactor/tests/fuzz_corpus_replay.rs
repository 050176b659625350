//! Replays the committed fuzz corpus (`fuzz/corpus/reactor_ops/`) through
//! the fuzz target's model driver, so stable CI runs every seed, on each
//! backend the suite runs on, without libFuzzer or nightly.

#[path = "../../fuzz/src/reactor_ops.rs"]
mod reactor_ops;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

use reactor_ops::Coverage;

#[test]
fn replay_reactor_ops_corpus() {
    let total = replay::replay("reactor_ops", |data| {
        reactor_ops::run(data);
        reactor_ops::run_with_coverage(data)
    });

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
