//! Replays the committed `token_slab` fuzz corpus
//! (`fuzz/corpus/token_slab/`) through the fuzz target's model driver, so
//! stable CI runs every seed, on each backend the suite runs on, without
//! libFuzzer or nightly. The driver includes the reactor's own
//! `src/slab.rs` with `#[path]`, so this also runs that file's unit tests.

#[path = "../../fuzz/src/replay.rs"]
mod replay;
#[path = "../../fuzz/src/token_slab.rs"]
mod token_slab;

use token_slab::Coverage;

#[test]
fn replay_token_slab_corpus() {
    let total = replay::replay("token_slab", |data| {
        token_slab::run(data);
        token_slab::run_with_coverage(data)
    });

    // The seeds, taken together, must keep reaching every branch the
    // driver counts; a change that silently stops reaching one fails here.
    let Coverage {
        ops,
        slab_reused_slots,
        stale_after_reuse,
        stale_vacant,
        never_issued,
        discards,
        registrations,
        reused_reg_slots,
        reused_op_slots,
        dropped_busy,
        completions,
        signals,
        user_packets,
        cancels,
        foreign_ops_refused,
        dead_handles_refused,
        dead_handles_after_reuse,
        fd_conflicts,
        user_queue_full,
        stale_notifications,
        reclaimed,
    } = total;
    for (what, n) in [
        ("operations", ops as u64),
        ("slab inserts into a freed slot", slab_reused_slots as u64),
        ("stale slab lookups after the slot's reuse", stale_after_reuse as u64),
        ("stale slab lookups of a free slot", stale_vacant as u64),
        ("slab lookups of never-issued tokens", never_issued as u64),
        ("slab discards", discards as u64),
        ("registrations", registrations as u64),
        ("registrations in a dropped one's slot", reused_reg_slots as u64),
        ("ops in a finished one's slot", reused_op_slots as u64),
        ("registrations dropped busy", dropped_busy as u64),
        ("completion packets", completions as u64),
        ("signal packets", signals as u64),
        ("user packets", user_packets as u64),
        ("cancels of live ops", cancels as u64),
        ("foreign op ids refused", foreign_ops_refused as u64),
        ("dropped registrations' handles refused", dead_handles_refused as u64),
        ("... while a newer registration held the slot", dead_handles_after_reuse as u64),
        ("register_fd of a watched fd refused", fd_conflicts as u64),
        ("sends refused by a full user queue", user_queue_full as u64),
        ("stale remote notifications", stale_notifications),
        ("reclaimed completions", reclaimed),
    ] {
        assert!(n > 0, "the corpus no longer reaches {what}: {total:?}");
    }
}
