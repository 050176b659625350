//! Raising from other threads: [`Signaler`], [`Sender`] and [`RemoteWaker`],
//! and the remote queue they share with the reactor.
//!
//! A remote event costs the reactor one entry in the remote queue per
//! empty→non-empty edge, and at most one kernel wake-up per crank:
//!
//! * a raise that only folds into a non-empty counted signal touches nothing
//!   but the signal (its word, or its fast lane);
//! * the raise that moves the word from empty pushes the registration's token
//!   onto the remote queue and sets `pending`;
//! * the eventfd is written only if the reactor is `sleeping`, and only by the
//!   one notifier that swaps `sleeping` from true to false.
//!
//! The reactor stores `sleeping = true`, issues a `SeqCst` fence and loads
//! `pending`; a notifier stores `pending = true`, issues a `SeqCst` fence and
//! loads `sleeping`. The two fences are ordered one way or the other, so at
//! least one side sees the other's store (Dekker): either the reactor does
//! not block, or the notifier kicks the eventfd. No wake-up is lost. (Fences
//! rather than `SeqCst` accesses: they cost the same on x86, and loom models
//! `SeqCst` fences but not `SeqCst` loads, so `remote/loom_model.rs` can
//! check this very code.)

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;

use tally_packets::{CountedSignal, LaneHint, Raised, Signals, Token};

use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, fence};

#[cfg(all(test, loom))]
mod loom_model;

/// What a notifier writes to end the reactor's blocking wait: an eventfd,
/// or under loom a flag and a condition variable the model blocks on.
struct WakeFd {
    #[cfg(not(loom))]
    fd: std::os::fd::OwnedFd,
    #[cfg(loom)]
    kicked: loom::sync::Mutex<bool>,
    #[cfg(loom)]
    cond: loom::sync::Condvar,
}

impl WakeFd {
    #[cfg(not(loom))]
    fn new() -> io::Result<WakeFd> {
        Ok(WakeFd { fd: crate::sys::syscall::eventfd()? })
    }

    #[cfg(not(loom))]
    fn raw(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }

    #[cfg(not(loom))]
    fn kick(&self) -> io::Result<()> {
        crate::sys::syscall::eventfd_kick(self.raw())
    }

    #[cfg(loom)]
    fn new() -> io::Result<WakeFd> {
        Ok(WakeFd { kicked: loom::sync::Mutex::new(false), cond: loom::sync::Condvar::new() })
    }

    #[cfg(loom)]
    fn raw(&self) -> i32 {
        -1
    }

    #[cfg(loom)]
    fn kick(&self) -> io::Result<()> {
        *self.kicked.lock().unwrap() = true;
        self.cond.notify_one();
        Ok(())
    }

    /// The model's blocking wait: returns once kicked, and consumes the
    /// kick as the reactor's read of the eventfd does. A wait nobody kicks
    /// is a deadlock, which loom reports.
    #[cfg(loom)]
    fn wait(&self) {
        let mut kicked = self.kicked.lock().unwrap();
        while !*kicked {
            kicked = self.cond.wait(kicked).unwrap();
        }
        *kicked = false;
    }
}

/// State shared between a reactor and every handle that can wake it.
pub(crate) struct Remote {
    /// Registrations with something new from another thread. Pushed by
    /// notifiers under the lock; swapped out whole by the reactor.
    queue: Mutex<Vec<Token>>,
    /// Set by a notifier after pushing; cleared by the reactor before it
    /// swaps the queue out. `SeqCst`: half of the sleep handshake.
    pending: AtomicBool,
    /// Set by the reactor just before it blocks; cleared by the reactor when
    /// it wakes, or by the one notifier that kicks the eventfd. `SeqCst`.
    sleeping: AtomicBool,
    /// False once the reactor is dropped: handles then return errors.
    alive: AtomicBool,
    wake_fd: WakeFd,
    /// Kernel wake-ups (eventfd writes) made so far.
    kicks: AtomicU64,
}

impl Remote {
    pub(crate) fn new() -> io::Result<Remote> {
        Ok(Remote {
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            wake_fd: WakeFd::new()?,
            kicks: AtomicU64::new(0),
        })
    }

    pub(crate) fn eventfd(&self) -> i32 {
        self.wake_fd.raw()
    }

    pub(crate) fn kicks(&self) -> u64 {
        self.kicks.load(Ordering::Relaxed)
    }

    fn gone() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "the reactor is gone")
    }

    /// Tells the reactor that `token` (if any) has something new, waking it
    /// if it sleeps.
    pub(crate) fn notify(&self, token: Option<Token>) -> io::Result<()> {
        if !self.alive.load(Ordering::Acquire) {
            return Err(Self::gone());
        }
        if let Some(token) = token {
            self.queue.lock().push(token);
        }
        // Release, paired with the reactor's Acquire loads: whatever the
        // notifier published before waking (a task id in the executor's own
        // queue, a flag) is visible to the crank that sees `pending`, even
        // when that crank does not block and takes no lock we share.
        self.pending.store(true, Ordering::Release);
        // Dekker, with `prepare_sleep`'s fence: see the module doc.
        fence(Ordering::SeqCst);
        // Load first so that an awake reactor costs notifiers no write; the
        // swap elects the one notifier that kicks.
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::Relaxed) {
            self.kicks.fetch_add(1, Ordering::Relaxed);
            self.wake_fd.kick()?;
        }
        Ok(())
    }

    /// The reactor is about to block. Returns false if something is already
    /// pending, in which case it must not block.
    pub(crate) fn prepare_sleep(&self) -> bool {
        // Swaps, not stores, wherever the reactor writes `sleeping`: a
        // notifier's swap and the reactor's write then meet in one
        // modification order in loom too (loom#254 lets a plain store land
        // inside another thread's RMW). One locked instruction per blocking
        // turn, beside a syscall.
        self.sleeping.swap(true, Ordering::Relaxed);
        // Dekker, with `notify`'s fence: see the module doc.
        fence(Ordering::SeqCst);
        if self.pending.load(Ordering::Acquire) {
            self.sleeping.swap(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The reactor is awake again.
    pub(crate) fn woke(&self) {
        self.sleeping.swap(false, Ordering::Relaxed);
    }

    /// Whether a notification arrived since the last `take`.
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Moves the queued tokens into `out` (which should be empty), leaving
    /// `out`'s old allocation in the queue for reuse.
    ///
    /// Nothing pending (the common crank) costs one load and no lock. The
    /// load is Acquire, paired with `notify`'s Release: what a notifier
    /// published before waking (the executor's own remote queue and its
    /// flag) is visible to this thread from here on. A notifier whose
    /// `pending = true` this load misses has pushed, or is about to; its
    /// store then stands, so the next `prepare_sleep` refuses to block and
    /// the next take sees it.
    ///
    /// `pending` is cleared before the lock is taken: a notifier whose push
    /// this swap misses locked after it, so its `pending = true` lands after
    /// this clear and the next crank does not sleep.
    pub(crate) fn take(&self, out: &mut Vec<Token>) {
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        self.pending.store(false, Ordering::Relaxed);
        std::mem::swap(&mut *self.queue.lock(), out);
    }

    /// The model's stand-in for the reactor's blocking `io_uring_enter` or
    /// `epoll_wait`: returns once a notifier kicked.
    #[cfg(loom)]
    pub(crate) fn block(&self) {
        self.wake_fd.wait();
    }

    pub(crate) fn shut_down(&self) {
        self.alive.store(false, Ordering::Release);
    }
}

/// A reactor reduced to its remote-wake handshake, for the loom models of
/// this crate and of the executor (only under `--cfg loom`): it cranks as
/// [`Reactor::turn`](crate::Reactor::turn) does, blocking on the modelled
/// eventfd unless something is pending, then taking the remote queue.
#[cfg(loom)]
#[doc(hidden)]
pub struct ModelReactor {
    remote: Arc<Remote>,
    tokens: Vec<Token>,
}

#[cfg(loom)]
impl ModelReactor {
    /// A reactor with an empty remote queue, awake.
    pub fn new() -> ModelReactor {
        ModelReactor { remote: Arc::new(Remote::new().unwrap()), tokens: Vec::new() }
    }

    #[cfg(test)]
    pub(crate) fn remote(&self) -> &Arc<Remote> {
        &self.remote
    }

    /// A waker for this reactor, as `Reactor::remote_waker` makes.
    pub fn remote_waker(&self) -> RemoteWaker {
        RemoteWaker::new(self.remote.clone())
    }

    /// One crank: `prepare_sleep`, block until kicked if it allows and
    /// `may_block`, `woke`, then take the queue. Returns the tokens taken.
    pub fn crank(&mut self, may_block: bool) -> &[Token] {
        if may_block && self.remote.prepare_sleep() {
            self.remote.block();
            self.remote.woke();
        }
        self.tokens.clear();
        self.remote.take(&mut self.tokens);
        &self.tokens
    }
}

#[cfg(loom)]
impl Default for ModelReactor {
    fn default() -> ModelReactor {
        ModelReactor::new()
    }
}

#[cfg(loom)]
impl fmt::Debug for ModelReactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelReactor").finish_non_exhaustive()
    }
}

/// The part of a registration other threads can reach.
pub(crate) struct Shared {
    pub(crate) token: Token,
    pub(crate) signal: CountedSignal,
    user: Mutex<VecDeque<[u8; 32]>>,
    /// Whether `user` holds anything. Written only under `user`'s lock, so
    /// it equals `!user.is_empty()` whenever the lock is free; a drain reads
    /// it first and skips the lock when nothing is queued. A push the read
    /// misses is not lost: it notifies the reactor, and a later drain sees it.
    user_queued: AtomicBool,
    user_cap: usize,
    /// Set when the registration is dropped.
    closed: AtomicBool,
    pub(crate) remote: Arc<Remote>,
}

impl Shared {
    pub(crate) fn new(token: Token, remote: Arc<Remote>, user_cap: usize) -> Shared {
        Shared {
            token,
            signal: CountedSignal::new(),
            user: Mutex::new(VecDeque::new()),
            user_queued: AtomicBool::new(false),
            user_cap,
            closed: AtomicBool::new(false),
            remote,
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn check_open(&self) -> io::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the registration is closed"));
        }
        Ok(())
    }

    /// Moves every queued user payload out, oldest first.
    pub(crate) fn drain_user(&self, mut f: impl FnMut([u8; 32])) {
        // Acquire: pairs with the Release store of the push that set it.
        if !self.user_queued.load(Ordering::Acquire) {
            return;
        }
        let mut q = self.user.lock();
        q.drain(..).for_each(&mut f);
        self.user_queued.store(false, Ordering::Relaxed);
    }

    pub(crate) fn has_user(&self) -> bool {
        self.user_queued.load(Ordering::Acquire)
    }
}

/// Raises a registration's counted signal from any thread.
///
/// Cheap to clone. A raise that folds into an already-raised signal costs one
/// atomic RMW and nothing else: a `fetch_add` on the signal's fast lane once
/// this handle knows its bits own it (see [`CountedSignal`]), a
/// compare-and-swap otherwise. Only the raise that moves the signal from
/// empty queues a wake-up, and the reactor makes at most one kernel wake-up
/// per crank however many arrive.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use tally_reactor::{Reactor, Signals};
///
/// let reactor = Reactor::new()?;
/// let reg = reactor.register();
/// let signaler = reg.signaler();
/// std::thread::spawn(move || {
///     for _ in 0..1000 {
///         signaler.raise(Signals::user(0), 1).unwrap();
///     }
/// })
/// .join()
/// .unwrap();
/// reactor.turn(Some(std::time::Duration::ZERO))?;
/// let packets = reg.try_drain();
/// assert_eq!(packets[0].as_signal().unwrap().count.get(), 1000);
/// # Ok(())
/// # }
/// ```
pub struct Signaler {
    shared: Arc<Shared>,
    /// Whether this handle's bits own the signal's fast lane.
    hint: LaneHint,
}

impl Clone for Signaler {
    /// The clone starts with an empty hint and learns the lane's owner on
    /// its first raise (one compare-and-swap on the cold path).
    fn clone(&self) -> Signaler {
        Signaler::new(self.shared.clone())
    }
}

impl Signaler {
    pub(crate) fn new(shared: Arc<Shared>) -> Signaler {
        Signaler { shared, hint: LaneHint::new() }
    }

    /// ORs `bits` into the registration's signal and adds `n` to its count
    /// (saturating). Returns whether this raise owed the wake-up.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` once the registration or its reactor is gone; the raise
    /// is then not delivered. Any error writing the reactor's eventfd.
    pub fn raise(&self, bits: Signals, n: u32) -> io::Result<Raised> {
        self.shared.check_open()?;
        let raised = self.shared.signal.raise_with(&self.hint, bits, n);
        if raised == Raised::Woke {
            self.shared.remote.notify(Some(self.shared.token))?;
        }
        Ok(raised)
    }

    /// The token of the registration this raises.
    pub fn token(&self) -> Token {
        self.shared.token
    }
}

impl fmt::Debug for Signaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signaler").field("token", &self.shared.token).finish()
    }
}

/// Sends 32-byte user packets to a registration from any thread.
///
/// The queue behind it is bounded; a full queue refuses with `WouldBlock`
/// rather than growing.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    pub(crate) fn new(shared: Arc<Shared>) -> Sender {
        Sender { shared }
    }

    /// Queues one user packet.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when the registration's user queue is full (drain it and
    /// retry); `BrokenPipe` once the registration or its reactor is gone.
    pub fn send(&self, payload: [u8; 32]) -> io::Result<()> {
        self.shared.check_open()?;
        let was_empty = {
            let mut q = self.shared.user.lock();
            if q.len() >= self.shared.user_cap {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the registration's user packet queue is full",
                ));
            }
            q.push_back(payload);
            self.shared.user_queued.store(true, Ordering::Release);
            q.len() == 1
        };
        if was_empty {
            self.shared.remote.notify(Some(self.shared.token))?;
        }
        Ok(())
    }

    /// The token of the registration this sends to.
    pub fn token(&self) -> Token {
        self.shared.token
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("token", &self.shared.token).finish()
    }
}

/// Wakes the reactor from any thread without naming a registration: the
/// building block for a `Send` task waker. Wakes coalesce like raises.
#[derive(Clone)]
pub struct RemoteWaker {
    remote: Arc<Remote>,
}

impl RemoteWaker {
    pub(crate) fn new(remote: Arc<Remote>) -> RemoteWaker {
        RemoteWaker { remote }
    }

    /// Makes the reactor's current or next `turn` return without blocking.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` once the reactor is gone.
    pub fn wake(&self) -> io::Result<()> {
        self.remote.notify(None)
    }
}

impl fmt::Debug for RemoteWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteWaker").finish_non_exhaustive()
    }
}
