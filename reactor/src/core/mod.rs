//! The reactor's core: the state behind the `RefCell`, and the one place
//! that changes it. Registrations and operations live in two generational
//! slabs; an operation's slot owns its resources from submission to its
//! final completion. Nothing here calls user code: wakers are collected and
//! called by `Reactor::turn` once the borrow is released.
//!
//! * `submit.rs`: submitting, re-arming, and the start of a crank;
//! * `dispatch.rs`: the completion path, backend to core to registration,
//!   and draining;
//! * `teardown.rs`: cancellation, deregistration and shutdown;
//! * `lent.rs`: what drained packets carry (fds, buffers) until taken;
//! * `reg.rs`: a registration's state, hot in the slab and cold boxed.
//!
//! The core uses `sys/` (the backend) and nothing above it; the public
//! types (`Reactor`, `Registration`, `RecvBuf`) use the core.

mod dispatch;
mod lent;
mod reg;
mod submit;
mod teardown;

pub(crate) use dispatch::SignalTake;

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use tally_packets::{Signals, Token};

use crate::config::Config;
use crate::metrics::Counters;
use crate::op::{OpId, OpKind};
use crate::remote::Remote;
use crate::slab::GenSlab;
use crate::sys::{Cqe, Driver};

pub(crate) use lent::Lent;
pub(crate) use reg::RegSlot;

/// The longest back-off before re-arming a failed wake read: 2^6 = 64 ms.
pub(crate) const WAKE_BACKOFF_MAX_SHIFT: u32 = 6;

/// Everything one reactor knows, behind its `RefCell`.
pub(crate) struct Core {
    /// The backend: submits, enters the kernel, reports completions.
    pub(crate) driver: Driver,
    /// Registrations, by token (slot + generation).
    pub(crate) regs: GenSlab<RegSlot>,
    /// Operations, by op token, each owning its resources until its final
    /// completion.
    pub(crate) ops: GenSlab<OpSlot>,
    /// The queue and wake-up word that other threads notify through.
    remote: Arc<Remote>,
    pub(crate) config: Config,
    /// Counters behind [`Metrics`](crate::Metrics).
    pub(crate) counters: Counters,
    /// Scratch for reaping; keeps its allocation.
    cqes: Vec<Cqe>,
    /// Scratch for the remote queue; swapped with it each crank.
    remote_tokens: Vec<Token>,
    /// Wakers to call once the borrow is released.
    pub(crate) wakers: Vec<Waker>,
    /// Registrations woken this crank, checked for drains at the next.
    pub(crate) woken: Vec<Token>,
    /// Multishot operations waiting to be re-armed.
    paused: Vec<OpId>,
    /// Which registration watches each fd (for `register_fd`), by fd number.
    pub(crate) fd_owner: Vec<Option<Token>>,
    /// The read on the remote eventfd; its 8-byte buffer lives here.
    pub(crate) wake_op: OpKind,
    /// Whether the backend holds `wake_op`.
    pub(crate) wake_armed: bool,
    /// Wake reads that failed in a row, and when to arm the next one after
    /// a failure (never at once: a read that fails every time would spin).
    pub(crate) wake_failures: u32,
    pub(crate) wake_retry_at: Option<Instant>,
}

/// An operation's life: submitted and in flight, then done (holding
/// resources for `reclaim`) or finished; or cancelled, holding its resources
/// until the kernel's final completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpState {
    InFlight,
    /// A multishot op cancelled for back pressure: becomes `Paused`.
    Stopping,
    /// Waiting to be re-armed.
    Paused,
    /// Owner gone or cancel asked: completions are reclaimed, not delivered.
    Cancelled,
    /// A one-shot op finished; its buffer waits for `reclaim`.
    Done(i32),
}

pub(crate) struct OpSlot {
    pub(crate) reg: Token,
    /// Where this op sits in its registration's `ops` list, so that it
    /// leaves the list in O(1) when it finishes.
    pub(crate) reg_index: usize,
    pub(crate) kind: OpKind,
    pub(crate) state: OpState,
    /// Set when the op is (re)armed, cleared by its first completion.
    pub(crate) armed_fresh: bool,
    /// Multishot poll only: consecutive armings whose first completion was
    /// also their last. A file that cannot wait for readiness (`/dev/null`,
    /// a pseudo-file without poll) answers every arming that way, and so
    /// does a healthy fd while the CQ is full; `watched` asks epoll which.
    pub(crate) instant_ends: u8,
}

impl OpSlot {
    /// What `submit` writes into a fresh slot before filling in the op: a
    /// constant, so that it is stored straight from read-only data.
    const VACANT: OpSlot = OpSlot {
        reg: Token::from_u64(0),
        reg_index: 0,
        kind: OpKind::Nop,
        state: OpState::InFlight,
        armed_fresh: true,
        instant_ends: 0,
    };
}

impl OpState {
    pub(crate) fn kernel_holds(self) -> bool {
        matches!(self, OpState::InFlight | OpState::Stopping | OpState::Cancelled)
    }
}

impl Core {
    pub(crate) fn new(
        driver: Driver,
        remote: Arc<Remote>,
        config: Config,
        wake_op: OpKind,
    ) -> Core {
        Core {
            driver,
            regs: GenSlab::new(),
            ops: GenSlab::new(),
            remote,
            config,
            counters: Counters::default(),
            cqes: Vec::new(),
            remote_tokens: Vec::new(),
            wakers: Vec::new(),
            woken: Vec::new(),
            paused: Vec::new(),
            fd_owner: Vec::new(),
            wake_op,
            wake_armed: false,
            wake_failures: 0,
            wake_retry_at: None,
        }
    }

    pub(crate) fn insert_reg(&mut self, trigger: Signals, fd: Option<RawFd>) -> Token {
        let slot = RegSlot::new(trigger, fd);
        // 2^32 live registrations cannot fit in memory first.
        self.regs.insert(slot).expect("registration slab exhausted")
    }
}

/// Takes op `token` (at `index`) out of registration `reg`'s list, in O(1):
/// the last op moves into its place and learns its new index.
pub(crate) fn unlink(ops: &mut GenSlab<OpSlot>, reg: &mut RegSlot, token: OpId, index: usize) {
    let Some(list) =
        reg.cold_opt_mut().map(|c| &mut c.ops).filter(|l| l.get(index) == Some(&token))
    else {
        debug_assert!(false, "op {token:?} is not at {index} in its registration's list");
        return;
    };
    list.swap_remove(index);
    if let Some(&moved) = list.get(index) {
        if let Some(m) = ops.get_mut(moved) {
            m.reg_index = index;
        }
    }
}

/// What a [`Reactor`](crate::Reactor) handle, its registrations and its
/// buffers share.
pub(crate) struct Inner {
    pub(crate) core: RefCell<Core>,
    pub(crate) remote: Arc<Remote>,
    /// Registrations dropped while the core was borrowed: deregistered at
    /// the start of the next turn.
    pub(crate) deferred: RefCell<Vec<Token>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.remote.shut_down();
        let core = self.core.get_mut();
        for token in std::mem::take(self.deferred.get_mut()) {
            drop(core.deregister(token));
        }
        core.shut_down();
    }
}
