//! [`Reactor`] and its [`Builder`]: the per-thread completion loop.
//!
//! One crank ([`Reactor::turn`]) flushes queued submissions and enters the
//! kernel once (waiting only if asked, and never past the timeout), reaps
//! every completion, folds or queues each into its registration, drains the
//! remote queue, and then wakes each woken registration's waker once, after
//! every internal borrow is released.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use tally_packets::{
    CompletionPacket, Count, CountedSignal, Packet, PacketKind, PacketList, PacketQueue, Signals,
    Token,
};

use crate::buf_ring::BufGroup;
use crate::metrics::{Counters, Metrics};
use crate::op::{Op, OpId, OpKind};
use crate::registration::Registration;
use crate::remote::{Remote, RemoteWaker, Shared};
use crate::slab::GenSlab;
use crate::sys::{Cqe, Driver, Features, uring};
use crate::syscall;

/// `user_data` of the remote wake-up read on the eventfd.
const WAKE_TOKEN: Token = Token::reserved(0);
/// `user_data` of cancel requests, whose own completions are ignored.
pub(crate) const CANCEL_TOKEN: u64 = Token::reserved(1).as_u64();

const IORING_OP_ACCEPT: u8 = io_uring::opcode::Accept::CODE;

/// How long a turn watches for a remote notification before it blocks:
/// well below the cost of a kernel wake-up plus the sleep and reschedule
/// around it, and long enough for a producer in a raise loop to come back
/// after the reactor took its word.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(5);

/// Settings fixed when the reactor is built.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) entries: u32,
    pub(crate) queue_cap: usize,
    pub(crate) user_cap: usize,
    pub(crate) defer_taskrun: bool,
    pub(crate) coop_taskrun: bool,
    pub(crate) assert_drained: bool,
}

/// Builds a [`Reactor`].
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let reactor = tally_reactor::Builder::new().entries(64).queue_cap(128).build()?;
/// assert_eq!(reactor.metrics().backend, "io_uring");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    config: Config,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// The defaults: 256 SQ entries, queues of 256 packets, 1024 pending user
    /// packets per registration, every setup flag the kernel allows.
    pub fn new() -> Builder {
        Builder {
            config: Config {
                entries: 256,
                queue_cap: 256,
                user_cap: 1024,
                defer_taskrun: true,
                coop_taskrun: true,
                assert_drained: false,
            },
        }
    }

    /// Submission queue entries (rounded up to a power of two by the
    /// kernel; the completion queue gets twice as many).
    pub fn entries(mut self, entries: u32) -> Builder {
        self.config.entries = entries.max(1);
        self
    }

    /// How many completion packets a registration queues before back
    /// pressure: past this, data-bearing multishot operations pause until a
    /// drain. (One-shot completions past the cap are still kept.)
    pub fn queue_cap(mut self, cap: usize) -> Builder {
        self.config.queue_cap = cap.max(1);
        self
    }

    /// How many user packets a [`Sender`](crate::Sender) may queue before it
    /// answers `WouldBlock`.
    pub fn user_cap(mut self, cap: usize) -> Builder {
        self.config.user_cap = cap.max(1);
        self
    }

    /// Whether to ask for `SINGLE_ISSUER | DEFER_TASKRUN` (default true).
    pub fn defer_taskrun(mut self, on: bool) -> Builder {
        self.config.defer_taskrun = on;
        self
    }

    /// Whether to ask for `COOP_TASKRUN | TASKRUN_FLAG` (default true).
    pub fn coop_taskrun(mut self, on: bool) -> Builder {
        self.config.coop_taskrun = on;
        self
    }

    /// In debug builds, panic in `turn` when a registration woken in the
    /// previous crank still holds packets. Off by default: the count is
    /// always kept in [`Metrics::undrained`].
    pub fn assert_drained(mut self, on: bool) -> Builder {
        self.config.assert_drained = on;
        self
    }

    /// Creates the ring and arms the remote wake-up.
    ///
    /// # Errors
    ///
    /// The ring cannot be created (`ENOSYS`, `EPERM` under seccomp, `ENOMEM`
    /// from the memlock limit, or `Unsupported` on a kernel too old), or the
    /// eventfd cannot be.
    pub fn build(self) -> io::Result<Reactor> {
        let driver = Driver::new(&self.config)?;
        let remote = Arc::new(Remote::new()?);
        let wake_op = OpKind::Read { fd: remote.eventfd(), buf: Vec::with_capacity(8), offset: 0 };
        let mut core = Core {
            driver,
            regs: GenSlab::new(),
            ops: GenSlab::new(),
            remote: remote.clone(),
            config: self.config,
            counters: Counters::default(),
            cqes: Vec::new(),
            remote_tokens: Vec::new(),
            wakers: Vec::new(),
            woken: Vec::new(),
            paused: Vec::new(),
            fd_owner: Vec::new(),
            wake_op,
            wake_armed: false,
            fresh_submissions: false,
        };
        core.arm_wake();
        Ok(Reactor {
            inner: Rc::new(Inner {
                core: RefCell::new(core),
                remote,
                deferred: RefCell::default(),
            }),
        })
    }
}

/// The per-thread completion reactor. `!Send` and `!Sync`.
///
/// A `Reactor` is a cheap handle (an `Rc`); clones share one ring.
/// Registrations keep the reactor alive, and it is torn down (cancelling
/// and waiting for everything in flight) when the last handle goes.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use tally_reactor::{Op, Reactor};
///
/// let reactor = Reactor::new()?;
/// let reg = reactor.register();
/// let op = reg.submit(Op::nop())?;
/// reactor.turn(None)?;
/// let packets = reg.try_drain();
/// assert_eq!(packets[0].as_completion().unwrap().op(), op);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Reactor {
    pub(crate) inner: Rc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) core: RefCell<Core>,
    pub(crate) remote: Arc<Remote>,
    /// Registrations dropped while the core was borrowed: deregistered at
    /// the start of the next turn.
    pub(crate) deferred: RefCell<Vec<Token>>,
}

pub(crate) struct Core {
    pub(crate) driver: Driver,
    pub(crate) regs: GenSlab<RegSlot>,
    pub(crate) ops: GenSlab<OpSlot>,
    remote: Arc<Remote>,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    /// Scratch for reaping; keeps its allocation.
    cqes: Vec<Cqe>,
    /// Scratch for the remote queue; swapped with it each crank.
    remote_tokens: Vec<Token>,
    /// Wakers to call once the borrow is released.
    wakers: Vec<Waker>,
    /// Registrations woken this crank, checked for drains at the next.
    woken: Vec<Token>,
    /// Multishot operations waiting to be re-armed.
    paused: Vec<OpId>,
    /// Which registration watches each fd (for `register_fd`), by fd number.
    fd_owner: Vec<Option<Token>>,
    /// The read on the remote eventfd; its 8-byte buffer lives here.
    wake_op: OpKind,
    wake_armed: bool,
    /// Whether operations were submitted or re-armed since the last enter:
    /// then the next turn does not spin before blocking, since the enter
    /// itself may complete them at once.
    fresh_submissions: bool,
}

/// One registration's reactor-side state.
pub(crate) struct RegSlot {
    /// Completion packets waiting for a drain, oldest first, at most
    /// `queue_cap` of them. Signals (readiness edges, remote raises) do not
    /// queue: they fold into `local_signal` and the shared counted signal
    /// and become one packet at drain time; user packets wait in `shared`.
    pub(crate) queue: PacketQueue,
    /// Completions the full queue refused. Nothing is lost: they are kept
    /// here, and the data-bearing multishot op that produced them pauses
    /// until the next drain (back pressure). Empty in steady state.
    pub(crate) overflow: Vec<Packet>,
    pub(crate) waker: Option<Waker>,
    pub(crate) trigger: Signals,
    /// Readiness edges folded in on this thread, packed as a CountedSignal.
    pub(crate) local_signal: u64,
    pub(crate) shared: Option<Arc<Shared>>,
    /// Operations this registration owns (in flight, paused, done, or
    /// cancelled by hand and awaiting their final completion). Each op's
    /// `reg_index` is its position here.
    pub(crate) ops: Vec<OpId>,
    pub(crate) fd: Option<RawFd>,
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
    pub(crate) opcode: u8,
    pub(crate) state: OpState,
    /// Set when the op is (re)armed, cleared by its first completion.
    pub(crate) armed_fresh: bool,
    /// Multishot poll only: consecutive armings whose first completion was
    /// also their last. A file that cannot wait for readiness (`/dev/null`,
    /// a pseudo-file without poll) answers every arming that way.
    pub(crate) instant_ends: u8,
}

impl OpState {
    pub(crate) fn kernel_holds(self) -> bool {
        matches!(self, OpState::InFlight | OpState::Stopping | OpState::Cancelled)
    }
}

/// Things that must be dropped after the core borrow ends: a dropped waker
/// may drop a task, whose drop may touch the reactor again.
#[derive(Default)]
pub(crate) struct Garbage {
    _waker: Option<Waker>,
    _slot: Option<RegSlot>,
}

impl Reactor {
    /// A reactor with the default [`Builder`] settings.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new() -> io::Result<Reactor> {
        Builder::new().build()
    }

    /// A builder.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A registration that receives packets from operations it submits and
    /// from [`Signaler`](crate::Signaler)s and [`Sender`](crate::Sender)s it
    /// hands out. Its signal packets report `trigger = Signals::ALL`.
    pub fn register(&self) -> Registration {
        self.register_with(Signals::ALL)
    }

    /// As [`register`](Self::register), with the trigger its signal packets
    /// report.
    pub fn register_with(&self, trigger: Signals) -> Registration {
        let mut core = self.inner.core.borrow_mut();
        let token = core.insert_reg(trigger, None);
        drop(core);
        Registration::new(self.inner.clone(), token)
    }

    /// Registers `fd` and watches it with a multishot poll for `interest`:
    /// readiness edges arrive as counted signal packets.
    ///
    /// # Errors
    ///
    /// `EBADF` if `fd` is not open; `PermissionDenied` if it is a
    /// directory, a block device, or a regular file outside the pseudo file
    /// systems (procfs, sysfs, cgroupfs, tracefs, FUSE, ...) whose files may
    /// support poll: those cannot wait for readiness, and epoll refuses
    /// them with `EPERM`; `AlreadyExists` if another live registration
    /// already watches `fd`. Another fd that turns out not to wait (say
    /// `/dev/null`) is caught at run time: its poll ends with a completion
    /// packet whose result is `-EPERM`, instead of reporting an edge on
    /// every turn.
    pub fn register_fd(&self, fd: RawFd, interest: Signals) -> io::Result<Registration> {
        syscall::check_pollable(fd)?;
        let mut core = self.inner.core.borrow_mut();
        let index = fd as usize;
        if let Some(Some(owner)) = core.fd_owner.get(index) {
            if core.regs.get(*owner).is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("fd {fd} is already registered with this reactor"),
                ));
            }
        }
        let token = core.insert_reg(interest, Some(fd));
        if core.fd_owner.len() <= index {
            core.fd_owner.resize(index + 1, None);
        }
        core.fd_owner[index] = Some(token);
        if let Err(e) = core.submit(token, Op::poll_multi(fd, interest)) {
            let garbage = core.deregister(token);
            drop(core);
            drop(garbage);
            return Err(e);
        }
        drop(core);
        Ok(Registration::new(self.inner.clone(), token))
    }

    /// Creates a ring of `entries` provided buffers of `buf_size` bytes each,
    /// for [`Op::recv_multi`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` unless `entries` is a power of two up to 32768;
    /// an OS error if the kernel lacks buffer rings (Linux 5.19).
    pub fn buf_ring(&self, entries: u16, buf_size: u32) -> io::Result<BufGroup> {
        let mut core = self.inner.core.borrow_mut();
        core.driver.add_buf_ring(entries, buf_size).map(BufGroup)
    }

    /// A handle that wakes this reactor from any thread.
    pub fn remote_waker(&self) -> RemoteWaker {
        RemoteWaker::new(self.inner.remote.clone())
    }

    /// What the kernel under this reactor supports.
    pub fn features(&self) -> Features {
        self.inner.core.borrow().driver.features()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        let core = self.inner.core.borrow();
        let c = &core.counters;
        Metrics {
            backend: core.driver.name(),
            turns: c.turns,
            enters: core.driver.enters(),
            submissions: c.submissions,
            completions: c.completions,
            packets: c.packets,
            stale_completions: c.stale_completions,
            reclaimed: c.reclaimed,
            stale_notifications: c.stale_notifications,
            coalesced_raises: c.coalesced_raises,
            undrained: c.undrained,
            cq_overflows: c.cq_overflows,
            queue_overflows: c.queue_overflows,
            kernel_wakes: self.inner.remote.kicks(),
            registrations: core.regs.len(),
            ops_in_flight: core.ops.iter().filter(|(_, op)| op.state.kernel_holds()).count(),
        }
    }

    /// One crank: submit, enter the kernel once, reap every completion,
    /// drain the remote queue, and wake each woken registration once.
    ///
    /// `timeout` bounds the wait: `Some(Duration::ZERO)` never blocks, and
    /// `None` blocks until something completes or another thread wakes the
    /// reactor. It does not block when completions or remote wake-ups are
    /// already waiting, and before blocking it spins for a few microseconds
    /// watching for a remote wake-up, which then costs no kernel wake-up.
    /// Returns the number of completions reaped.
    ///
    /// # Errors
    ///
    /// An error from `io_uring_enter` other than `EINTR`, `ETIME`, `EBUSY`
    /// or `EAGAIN` (which only mean "reap now"), or an attempt to turn the
    /// reactor from inside one of its own callbacks.
    pub fn turn(&self, timeout: Option<Duration>) -> io::Result<usize> {
        self.run_deferred();
        let Ok(mut core) = self.inner.core.try_borrow_mut() else {
            return Err(io::Error::other("Reactor::turn called while the reactor is busy"));
        };
        core.counters.turns += 1;
        core.begin_crank();
        let mut wait = timeout != Some(Duration::ZERO) && !core.driver.has_completions();
        // Spin briefly before blocking, unless submissions are queued or
        // the kernel holds completions for us (the enter may well return
        // at once): a raise that lands within the spin costs no kernel
        // wake-up (see DESIGN, contract 6).
        let spin = wait && !core.fresh_submissions && !core.driver.kernel_has_work();
        if (spin && self.inner.remote.spin_for_pending(SPIN_BEFORE_SLEEP))
            || (wait && !self.inner.remote.prepare_sleep())
        {
            wait = false;
        }
        let entered = core.driver.enter(wait, timeout);
        if wait {
            self.inner.remote.woke();
        }
        core.fresh_submissions = false;
        entered?;
        let reaped = core.reap_all();
        core.drain_remote();
        let mut wakers = std::mem::take(&mut core.wakers);
        drop(core);
        for waker in wakers.drain(..) {
            waker.wake();
        }
        if let Ok(mut core) = self.inner.core.try_borrow_mut() {
            core.wakers = wakers;
        }
        Ok(reaped)
    }

    /// Whether another thread has woken the reactor since the last turn.
    pub fn has_remote_wake(&self) -> bool {
        self.inner.remote.is_pending()
    }

    fn run_deferred(&self) {
        let tokens = std::mem::take(&mut *self.inner.deferred.borrow_mut());
        for token in tokens {
            let garbage = self.inner.core.borrow_mut().deregister(token);
            drop(garbage);
        }
    }
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor").field("metrics", &self.metrics()).finish()
    }
}

impl Core {
    fn insert_reg(&mut self, trigger: Signals, fd: Option<RawFd>) -> Token {
        let slot = RegSlot {
            queue: PacketQueue::with_cap(self.config.queue_cap),
            overflow: Vec::new(),
            waker: None,
            trigger,
            local_signal: 0,
            shared: None,
            ops: Vec::new(),
            fd,
        };
        // 2^32 live registrations cannot fit in memory first.
        self.regs.insert(slot).expect("registration slab exhausted")
    }

    fn arm_wake(&mut self) {
        // SAFETY: `wake_op` lives in the core, which outlives every
        // completion: Drop waits for this read's final completion.
        unsafe { self.driver.submit(WAKE_TOKEN, &mut self.wake_op) };
        self.wake_armed = true;
        self.counters.submissions += 1;
    }

    /// Submits `op` for registration `reg`.
    #[inline]
    pub(crate) fn submit(&mut self, reg: Token, op: Op) -> io::Result<OpId> {
        let Some(slot) = self.regs.get_mut(reg) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the registration is gone"));
        };
        if let OpKind::RecvMulti { group, .. } = op.kind {
            if self.driver.buf_ring(group.0).is_none() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "unknown buffer group"));
            }
        }
        let reg_index = slot.ops.len();
        let Some((token, op)) = self.ops.insert_mut(OpSlot {
            reg,
            reg_index,
            kind: op.kind,
            opcode: 0,
            state: OpState::InFlight,
            armed_fresh: true,
            instant_ends: 0,
        }) else {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "operation slab exhausted"));
        };
        slot.ops.push(token);
        // SAFETY: the op's resources live in its slab slot until its final
        // completion: deregistration and cancellation only mark it
        // Cancelled, and Drop waits for every op the kernel holds.
        op.opcode = unsafe { self.driver.submit(token, &mut op.kind) };
        self.counters.submissions += 1;
        self.fresh_submissions = true;
        Ok(token)
    }

    fn rearm(&mut self, token: OpId) {
        let Some(op) = self.ops.get_mut(token) else { return };
        // SAFETY: as in `submit`: the op stays in its slot until its final
        // completion.
        unsafe { self.driver.submit(token, &mut op.kind) };
        op.state = OpState::InFlight;
        op.armed_fresh = true;
        self.counters.submissions += 1;
        self.fresh_submissions = true;
    }

    /// The end of the previous crank: count registrations woken then and
    /// still undrained, and re-arm paused multishot ops that have room.
    fn begin_crank(&mut self) {
        // Drained in place: the list keeps its allocation from crank to crank.
        let mut woken = std::mem::take(&mut self.woken);
        for token in woken.drain(..) {
            let Some(reg) = self.regs.get(token) else { continue };
            if reg.waker.is_none() && reg.has_packets() {
                self.counters.undrained += 1;
                debug_assert!(
                    !self.config.assert_drained,
                    "registration {token:?} was woken but not drained in its crank"
                );
            }
        }
        self.woken = woken;
        let mut i = 0;
        while i < self.paused.len() {
            let token = self.paused[i];
            match self.may_rearm(token) {
                Some(true) => {
                    self.paused.swap_remove(i);
                    self.rearm(token);
                }
                Some(false) => i += 1,
                None => {
                    self.paused.swap_remove(i);
                }
            }
        }
    }

    /// `None` if the op is no longer paused; else whether it may re-arm.
    fn may_rearm(&mut self, token: OpId) -> Option<bool> {
        let op = self.ops.get(token).filter(|op| op.state == OpState::Paused)?;
        let reg = self.regs.get(op.reg)?;
        if reg.queue.is_full() || !reg.overflow.is_empty() {
            return Some(false);
        }
        if let OpKind::RecvMulti { group, .. } = op.kind {
            return Some(self.driver.buf_ring(group.0).is_some_and(|r| r.available > 0));
        }
        Some(true)
    }

    fn reap_all(&mut self) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        let mut reaped = 0;
        // The overflow flush is bounded: each round moves completions out of
        // the kernel's list, and a list that refuses to empty is an error we
        // surface through metrics rather than spin on.
        let mut overflow_rounds = 0;
        loop {
            self.driver.reap(&mut cqes);
            if cqes.is_empty() {
                if overflow_rounds < 64 && self.driver.flush_overflow() {
                    overflow_rounds += 1;
                    self.counters.cq_overflows += 1;
                    continue;
                }
                break;
            }
            reaped += cqes.len();
            for cqe in cqes.drain(..) {
                self.dispatch(cqe);
            }
        }
        self.cqes = cqes;
        self.counters.completions += reaped as u64;
        reaped
    }

    fn dispatch(&mut self, cqe: Cqe) {
        let token = Token::from_u64(cqe.user_data);
        if token.is_reserved() {
            if token == WAKE_TOKEN {
                self.wake_armed = false;
                if cqe.result != -libc::ECANCELED {
                    self.arm_wake();
                }
            }
            return;
        }
        let more = cqe.flags & CompletionPacket::F_MORE != 0;
        let Some(op) = self.ops.get_mut(token) else {
            self.counters.stale_completions += 1;
            return;
        };
        if !more {
            op.kind.settle(cqe.result);
        }
        let reg_token = op.reg;
        let reg = match op.state {
            OpState::Cancelled => None,
            _ => self.regs.get_mut(reg_token),
        };
        let Some(reg) = reg else {
            // Cancelled (or, defensively, orphaned): reclaim, never deliver.
            reclaim(&mut self.driver, &op.kind, cqe);
            self.counters.reclaimed += 1;
            if !more {
                let (reg, index) = (op.reg, op.reg_index);
                if let Some(r) = self.regs.get_mut(reg) {
                    unlink(&mut self.ops, r, token, index);
                }
                self.ops.discard(token);
            }
            return;
        };
        let multishot = op.kind.is_multishot();
        let first_since_armed = std::mem::replace(&mut op.armed_fresh, false);
        let mut deliver = true;
        let mut unpollable = false;
        if let OpKind::Poll { .. } = op.kind {
            if cqe.result >= 0 {
                let observed = uring::poll_signals(cqe.result as u32);
                reg.local_signal = CountedSignal::fold(reg.local_signal, observed, 1);
                deliver = false;
            }
            if multishot && more {
                op.instant_ends = 0;
            } else if multishot && first_since_armed && cqe.result > 0 {
                // The kernel found no wait queue to sleep on, reported the
                // file ready and ended the poll. Once could be a full CQ;
                // twice running means the file cannot wait, and re-arming
                // would spin the reactor: end the op with EPERM, as epoll
                // would have refused the fd.
                op.instant_ends = op.instant_ends.saturating_add(1);
                unpollable = op.instant_ends >= 2;
            }
        }
        let group = match op.kind {
            OpKind::RecvMulti { group, .. } => group.0,
            _ => 0,
        };
        if cqe.flags & CompletionPacket::F_BUFFER != 0 {
            if let Some(ring) = self.driver.buf_ring(group) {
                ring.taken((cqe.flags >> 16) as u16);
            }
        }
        // The end of one arming of a multishot op (no F_MORE) that is not
        // the end of the op itself: we stopped it for back pressure, or the
        // kernel ran out of provided buffers. Pause it and deliver nothing;
        // it re-arms once the registration is drained and buffers are back.
        let paused_end = multishot
            && !more
            && ((op.state == OpState::Stopping && cqe.result == -libc::ECANCELED)
                || cqe.result == -libc::ENOBUFS);
        if paused_end {
            deliver = false;
        }
        if deliver {
            let c = CompletionPacket::new(token, op.opcode, cqe.result, cqe.flags, group);
            if reg.enqueue(Packet::completion(reg_token, c)) {
                // Overflow: kept (nothing is lost), and back pressure.
                self.counters.queue_overflows += 1;
                if multishot && more && op.state == OpState::InFlight {
                    self.driver.cancel(token);
                    op.state = OpState::Stopping;
                }
            }
        }
        if unpollable {
            let c = CompletionPacket::new(token, op.opcode, -libc::EPERM, 0, group);
            if reg.enqueue(Packet::completion(reg_token, c)) {
                self.counters.queue_overflows += 1;
            }
        }
        if !more {
            // The kernel also ends an arming that is still healthy (say, it
            // could not post to a full CQ) with a success: re-arm that too.
            // A recv's 0 is end of file, and any other error ends the op.
            let healthy = |kind: &OpKind| match kind {
                OpKind::RecvMulti { .. } => cqe.result > 0,
                _ => cqe.result >= 0,
            };
            let keeps_going = multishot && !unpollable && (paused_end || healthy(&op.kind));
            if keeps_going {
                op.state = OpState::Paused;
                self.paused.push(token);
            } else if op.kind.has_buffer() {
                op.state = OpState::Done(cqe.result);
            } else {
                let index = op.reg_index;
                unlink(&mut self.ops, reg, token, index);
                self.ops.discard(token);
            }
        }
        if let Some(waker) = reg.waker.take() {
            self.wakers.push(waker);
            self.woken.push(reg_token);
        }
    }

    fn drain_remote(&mut self) {
        let mut tokens = std::mem::take(&mut self.remote_tokens);
        self.remote.take(&mut tokens);
        for token in tokens.drain(..) {
            match self.regs.get_mut(token) {
                Some(reg) => {
                    if let Some(waker) = reg.waker.take() {
                        self.wakers.push(waker);
                        self.woken.push(token);
                    }
                }
                None => self.counters.stale_notifications += 1,
            }
        }
        self.remote_tokens = tokens;
    }

    /// Moves everything queued for `token` into `out`. Returns whether
    /// anything was moved.
    pub(crate) fn drain(&mut self, token: Token, out: &mut PacketList) -> bool {
        let Some(reg) = self.regs.get_mut(token) else { return false };
        let before = out.len();
        let (mut bits, mut count) = CountedSignal::unpack(std::mem::take(&mut reg.local_signal));
        if let Some(shared) = &reg.shared {
            let (b, c) = shared.signal.take();
            bits |= b;
            count = count.saturating_add(c.get());
        }
        if !bits.is_empty() || count != Count::ZERO {
            out.push(Packet::signal(token, reg.trigger, bits, count));
            self.counters.coalesced_raises += u64::from(count.get().saturating_sub(1));
        }
        reg.queue.drain_into(out);
        out.extend_from_slice(&reg.overflow);
        reg.overflow.clear();
        if let Some(shared) = &reg.shared {
            shared.drain_user(|p| out.push(Packet::user(token, p)));
        }
        self.counters.packets += (out.len() - before) as u64;
        out.len() > before
    }

    /// Stores `waker` for `token` unless an equivalent one is stored; the
    /// replaced waker is returned so it drops outside the borrow.
    pub(crate) fn set_waker(&mut self, token: Token, waker: &Waker) -> Option<Waker> {
        let reg = self.regs.get_mut(token)?;
        match &reg.waker {
            Some(w) if w.will_wake(waker) => None,
            _ => reg.waker.replace(waker.clone()),
        }
    }

    pub(crate) fn shared(&mut self, token: Token) -> Option<Arc<Shared>> {
        let user_cap = self.config.user_cap;
        let remote = &self.remote;
        let reg = self.regs.get_mut(token)?;
        Some(
            reg.shared
                .get_or_insert_with(|| Arc::new(Shared::new(token, remote.clone(), user_cap)))
                .clone(),
        )
    }

    /// Cancels `op` if `reg` owns it: asks the kernel to stop it, and
    /// withdraws (reclaiming what they carry) its completions that are
    /// queued but not yet drained. Returns whether there was anything to
    /// cancel.
    pub(crate) fn cancel(&mut self, reg: Token, op: OpId) -> bool {
        let purged = self.purge(reg, op);
        let Some(slot) = self.ops.get_mut(op).filter(|o| o.reg == reg) else { return purged };
        match slot.state {
            OpState::InFlight | OpState::Stopping => {
                self.driver.cancel(op);
                slot.state = OpState::Cancelled;
                true
            }
            OpState::Paused | OpState::Done(_) => {
                self.remove_op(op);
                true
            }
            OpState::Cancelled => purged,
        }
    }

    /// Takes `op`'s completions out of `reg`'s queue and reclaims what they
    /// carry (an accepted fd, a provided buffer). Returns whether there
    /// were any.
    fn purge(&mut self, reg: Token, op: OpId) -> bool {
        let Some(r) = self.regs.get_mut(reg) else { return false };
        let is_op = |p: &Packet| p.as_completion().is_some_and(|c| c.op() == op);
        let before = r.queue.len() + r.overflow.len();
        let (driver, counters) = (&mut self.driver, &mut self.counters);
        let mut keep = |packet: &Packet| {
            if !is_op(packet) {
                return true;
            }
            reclaim_packet(driver, packet);
            counters.reclaimed += 1;
            false
        };
        r.queue.retain(&mut keep);
        r.overflow.retain(|p| keep(p));
        r.queue.len() + r.overflow.len() < before
    }

    /// Removes op `token` from the slab and from its registration's list.
    fn remove_op(&mut self, token: OpId) -> Option<OpSlot> {
        let slot = self.ops.remove(token)?;
        if let Some(r) = self.regs.get_mut(slot.reg) {
            unlink(&mut self.ops, r, token, slot.reg_index);
        }
        Some(slot)
    }

    /// The buffer of a finished one-shot op, handed back to its owner.
    pub(crate) fn reclaim(&mut self, reg: Token, op: OpId) -> Option<Vec<u8>> {
        let slot = self.ops.get(op).filter(|o| o.reg == reg)?;
        let OpState::Done(result) = slot.state else { return None };
        let slot = self.remove_op(op)?;
        slot.kind.into_buffer(result)
    }

    /// Removes a registration: cancels its ops, reclaims resources in its
    /// queued packets, and closes its remote handles.
    pub(crate) fn deregister(&mut self, token: Token) -> Garbage {
        let Some(mut slot) = self.regs.remove(token) else { return Garbage::default() };
        for op in slot.ops.drain(..) {
            let Some(o) = self.ops.get_mut(op) else { continue };
            match o.state {
                OpState::InFlight | OpState::Stopping => {
                    self.driver.cancel(op);
                    o.state = OpState::Cancelled;
                }
                OpState::Paused | OpState::Done(_) => {
                    self.ops.remove(op);
                }
                OpState::Cancelled => {}
            }
        }
        for packet in slot.queue.iter().chain(&slot.overflow) {
            if reclaim_packet(&mut self.driver, packet) {
                self.counters.reclaimed += 1;
            }
        }
        if let Some(shared) = &slot.shared {
            shared.close();
        }
        if let Some(fd) = slot.fd {
            if let Some(owner) = self.fd_owner.get_mut(fd as usize) {
                if *owner == Some(token) {
                    *owner = None;
                }
            }
        }
        Garbage { _waker: slot.waker.take(), _slot: Some(slot) }
    }

    /// Cancels everything the kernel holds and waits (bounded) for the
    /// final completions, so that no buffer is freed under the kernel.
    fn shut_down(&mut self) {
        let held: Vec<OpId> =
            self.ops.iter().filter(|(_, o)| o.state.kernel_holds()).map(|(t, _)| t).collect();
        for token in held {
            self.driver.cancel(token);
            if let Some(o) = self.ops.get_mut(token) {
                o.state = OpState::Cancelled;
            }
        }
        if self.wake_armed {
            self.driver.cancel(WAKE_TOKEN);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut cqes = Vec::new();
        loop {
            let busy = self.wake_armed || self.ops.iter().any(|(_, o)| o.state.kernel_holds());
            if !busy {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let _ = self.driver.enter(true, Some((deadline - now).min(Duration::from_millis(100))));
            self.driver.flush_overflow();
            self.driver.reap(&mut cqes);
            for cqe in cqes.drain(..) {
                let token = Token::from_u64(cqe.user_data);
                if token == WAKE_TOKEN {
                    self.wake_armed = false;
                    continue;
                }
                let Some(op) = self.ops.get_mut(token) else { continue };
                reclaim(&mut self.driver, &op.kind, cqe);
                if cqe.flags & CompletionPacket::F_MORE == 0 {
                    op.kind.settle(cqe.result);
                    self.ops.remove(token);
                }
            }
        }
        // The kernel kept some operations past the deadline. Freeing their
        // memory could let it write into freed memory: leak it instead.
        eprintln!(
            "tally: reactor dropped with operations the kernel would not cancel; leaking their buffers"
        );
        std::mem::forget(std::mem::replace(&mut self.ops, GenSlab::new()));
        std::mem::forget(std::mem::replace(&mut self.wake_op, OpKind::Nop));
    }
}

impl RegSlot {
    /// Queues `packet`, or keeps it in the overflow list when the queue is
    /// full. Returns whether it overflowed.
    #[inline]
    fn enqueue(&mut self, packet: Packet) -> bool {
        match self.queue.push(packet) {
            Ok(_) => false,
            Err(packet) => {
                self.overflow.push(packet);
                true
            }
        }
    }

    fn has_packets(&self) -> bool {
        !self.queue.is_empty()
            || !self.overflow.is_empty()
            || self.local_signal != 0
            || self
                .shared
                .as_ref()
                .is_some_and(|s| s.signal.peek() != (Signals::NONE, Count::ZERO) || s.has_user())
    }
}

/// Takes op `token` (at `index`) out of registration `reg`'s list, in O(1):
/// the last op moves into its place and learns its new index.
fn unlink(ops: &mut GenSlab<OpSlot>, reg: &mut RegSlot, token: OpId, index: usize) {
    if reg.ops.get(index) != Some(&token) {
        debug_assert!(false, "op {token:?} is not at {index} in its registration's list");
        return;
    }
    reg.ops.swap_remove(index);
    if let Some(&moved) = reg.ops.get(index) {
        if let Some(m) = ops.get_mut(moved) {
            m.reg_index = index;
        }
    }
}

/// Reclaims what a queued packet carries, if it is a completion that
/// carries something. Returns whether it was a completion.
fn reclaim_packet(driver: &mut Driver, packet: &Packet) -> bool {
    let PacketKind::Completion(c) = packet.kind() else { return false };
    let cqe = Cqe { user_data: 0, result: c.result, flags: c.flags };
    reclaim_group(driver, c.opcode == IORING_OP_ACCEPT, cqe, c.buf_group, Fresh::Queued);
    true
}

/// Frees what a completion of `kind`, fresh from the kernel, carries when
/// nobody will receive it.
fn reclaim(driver: &mut Driver, kind: &OpKind, cqe: Cqe) {
    let group = match kind {
        OpKind::RecvMulti { group, .. } => group.0,
        _ => u16::MAX,
    };
    reclaim_group(driver, kind.yields_fd(), cqe, group, Fresh::FromKernel);
}

/// Where the completion being reclaimed comes from, which decides what our
/// buffer-ring bookkeeping already knows about the buffer it names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fresh {
    /// Straight from the CQ: the ring still counts the buffer as the
    /// kernel's, so it is first marked taken, then handed back.
    FromKernel,
    /// A packet that was queued: dispatch already marked it taken.
    Queued,
}

fn reclaim_group(driver: &mut Driver, yields_fd: bool, cqe: Cqe, group: u16, fresh: Fresh) {
    if yields_fd && cqe.result >= 0 {
        syscall::close_fd(cqe.result);
    }
    if cqe.flags & CompletionPacket::F_BUFFER != 0 {
        let bid = (cqe.flags >> 16) as u16;
        if let Some(ring) = driver.buf_ring(group) {
            if fresh == Fresh::FromKernel {
                ring.taken(bid);
            }
            ring.recycle(bid);
        }
    }
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
