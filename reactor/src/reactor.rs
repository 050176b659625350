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
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use tally_packets::{PacketList, Signals};

use crate::config::{Backend, Config};
use crate::core::{Core, Inner};
use crate::metrics::Metrics;
use crate::op::{BufGroup, Op};
use crate::registration::Registration;
use crate::remote::{Remote, RemoteWaker};
use crate::sys::{Driver, Features, syscall};

/// Builds a [`Reactor`].
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let reactor = tally_reactor::Builder::new().entries(64).queue_cap(128).build()?;
/// println!("running on {}", reactor.metrics().backend);
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
    /// packets and 64 provided buffers held per registration, every setup
    /// flag the kernel allows.
    pub fn new() -> Builder {
        Builder {
            config: Config {
                entries: 256,
                queue_cap: 256,
                user_cap: 1024,
                buf_cap: 64,
                defer_taskrun: true,
                coop_taskrun: true,
                assert_drained: false,
                backend: Backend::Auto,
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

    /// How many provided buffers one registration may hold before its
    /// multishot receives pause: buffers delivered to it and not yet handed
    /// back (queued in packets, lent by a drain, or claimed as a
    /// [`RecvBuf`](crate::RecvBuf) and not dropped). Past this, that
    /// registration alone pauses, and re-arms once it gives buffers back,
    /// so that a few unread streams cannot take every buffer of a ring the
    /// others share. A receive in flight may still deliver a few past the
    /// cap before it stops.
    pub fn buf_cap(mut self, cap: u32) -> Builder {
        self.config.buf_cap = cap.max(1);
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

    /// Which backend to run on (default [`Backend::Auto`]: io_uring, else
    /// epoll; the environment variable `TALLY_BACKEND` overrides `Auto`).
    pub fn backend(mut self, backend: Backend) -> Builder {
        self.config.backend = backend;
        self
    }

    /// Sets up the backend and arms the remote wake-up. With
    /// [`Backend::Auto`], a ring that cannot be set up (`EPERM` under
    /// seccomp, `ENOSYS`, `ENOMEM`, `EINVAL`) or lacks an opcode tally needs
    /// means epoll, and [`Metrics::fallback`](crate::Metrics::fallback) says
    /// why.
    ///
    /// # Errors
    ///
    /// A forced [`Backend::IoUring`] that cannot start: the error names the
    /// step (`io_uring_setup`), the errno, the likely causes and
    /// `TALLY_BACKEND=epoll`. Also epoll or the eventfd failing to be
    /// created, and a `TALLY_BACKEND` other than `io_uring`, `epoll` or
    /// `auto`.
    pub fn build(self) -> io::Result<Reactor> {
        let driver = Driver::new(&self.config)?;
        let remote = Arc::new(Remote::new()?);
        let wake_op = Op::read(remote.eventfd(), Vec::with_capacity(8)).kind;
        let mut core = Core::new(driver, remote.clone(), self.config, wake_op);
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
    /// `/dev/null`) is caught at run time: when its poll ends the moment it
    /// is armed twice running, the reactor asks epoll whether the fd can
    /// wait (a healthy fd ends that way too when the CQ is full), and if
    /// not the poll ends with a completion packet whose result is `-EPERM`,
    /// instead of reporting an edge on every turn.
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
            backend: core.driver.backend(),
            fallback: core.driver.fallback(),
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
    /// already waiting.
    /// Returns the number of completions reaped.
    ///
    /// # Errors
    ///
    /// An error from `io_uring_enter` (or `epoll_wait`) other than `EINTR`,
    /// `ETIME`, `EBUSY` or `EAGAIN` (which only mean "reap now"), or an attempt to turn the
    /// reactor from inside one of its own callbacks.
    pub fn turn(&self, timeout: Option<Duration>) -> io::Result<usize> {
        self.run_deferred();
        let Ok(mut core) = self.inner.core.try_borrow_mut() else {
            return Err(io::Error::other("Reactor::turn called while the reactor is busy"));
        };
        core.counters.turns += 1;
        core.begin_crank();
        // While a failed wake read waits to be re-armed, nothing would end
        // a blocking wait when another thread wakes us: wait no longer.
        let timeout = match core.wake_retry_at {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                Some(timeout.map_or(left, |t| t.min(left)))
            }
            None => timeout,
        };
        let mut wait = timeout != Some(Duration::ZERO) && !core.driver.has_completions();
        // No spin before blocking: watching `pending` makes the reactor take
        // a flooded signal every few raises, and each take costs the
        // producer an edge and a cache-line transfer. In W1 a 5 µs spin cut
        // the flood to a fifth and gained nothing in W2, W3 or W6.
        if wait && !self.inner.remote.prepare_sleep() {
            wait = false;
        }
        let entered = core.driver.enter(wait, timeout);
        if wait {
            self.inner.remote.woke();
        }
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

    /// Whether the last turn's wait was cut short by a signal handler
    /// (`EINTR`). The turn itself still returns `Ok`, having reaped what
    /// was there; a caller that must report interruptions (a `poll(2)`-
    /// style API) asks here.
    pub fn interrupted(&self) -> bool {
        self.inner.core.borrow().driver.interrupted()
    }

    /// Drains every registration the last turn woke into `out`, one list
    /// for all of them (each packet's [`key`](crate::Packet::key) says whose it
    /// is), and stores `waker` in each again. Returns whether anything was
    /// drained.
    ///
    /// This serves a consumer that runs many registrations from one loop
    /// rather than one future per registration, such as a readiness shim:
    /// it gives each registration the same `waker` once (say, by polling it
    /// with [`Waker::noop`]), and after each turn collects everything in
    /// one call, without a lookup per registration. Only registrations
    /// holding a waker are woken, so one that was never polled is not
    /// drained here.
    pub fn drain_woken(&self, waker: &Waker, out: &mut PacketList) -> bool {
        let mut core = self.inner.core.borrow_mut();
        let core = &mut *core;
        let before = out.len();
        let mut replaced = Vec::new();
        let woken = std::mem::take(&mut core.woken);
        for &token in &woken {
            core.drain(token, out);
            // `None` for a registration that is gone, or already holds an
            // equivalent waker.
            if let Some(old) = core.set_waker(token, waker) {
                replaced.push(old);
            }
        }
        core.woken = woken;
        drop(replaced);
        out.len() > before
    }

    fn run_deferred(&self) {
        let tokens = std::mem::take(&mut *self.inner.deferred.borrow_mut());
        for token in tokens {
            let garbage = self.inner.core.borrow_mut().deregister(token);
            drop(garbage);
        }
    }
}

impl AsRawFd for Reactor {
    /// The backend's fd, readable while completions wait to be reaped (the
    /// ring's fd, or the epoll instance's), so that a reactor can be
    /// nested in another event loop. Do not close it.
    fn as_raw_fd(&self) -> RawFd {
        self.inner.core.borrow().driver.as_raw_fd()
    }
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor").field("metrics", &self.metrics()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WAKE_TOKEN;
    use tally_packets::PacketList;

    /// Review finding 8: a wake read that fails every time it is armed
    /// (here for real: a read of fd -1, which the kernel answers with
    /// `EBADF` at once) must not spin the reactor. It is re-armed after a
    /// back-off, blocking turns still return, and a remote wake-up during
    /// the back-off still ends one.
    #[test]
    fn a_wake_read_that_keeps_failing_does_not_spin_the_reactor() {
        let reactor = Reactor::new().unwrap();
        let inner = &reactor.inner;
        // The read of fd -1 takes the real read's place at its next arming:
        // the cancel's ECANCELED re-arms it at once.
        let real_wake = {
            let mut core = inner.core.borrow_mut();
            let real = std::mem::replace(&mut core.wake_op, Op::read(-1, Vec::new()).kind);
            core.driver.cancel(WAKE_TOKEN);
            real
        };
        let start = Instant::now();
        while inner.core.borrow().wake_failures == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "the failing read never ran");
            reactor.turn(Some(Duration::from_millis(1))).unwrap();
        }
        let before = reactor.metrics().submissions;
        let (start, mut turns) = (Instant::now(), 0u32);
        while start.elapsed() < Duration::from_millis(300) {
            reactor.turn(None).unwrap();
            turns += 1;
        }
        let rearmed = reactor.metrics().submissions - before;
        // Back-offs of 1, 2, 4, ... 64 ms fit about ten re-arms in 300 ms;
        // re-armed at once, the failing read made every turn return at
        // once, thousands of times.
        assert!(turns < 60, "{turns} turns in 300 ms: the failing wake read spins the reactor");
        assert!(rearmed >= 3, "the failing wake read was re-armed only {rearmed} times");

        // During a back-off, another thread's raise still ends a blocking
        // turn (within the longest back-off) and reaches its registration.
        let waited = raise_from_another_thread(&reactor, None);
        assert!(waited.is_some(), "a raise during the back-off was lost");

        // Put the real read back; it is armed at the next due retry, and
        // the reactor shuts down cleanly.
        {
            let mut core = inner.core.borrow_mut();
            while core.wake_armed {
                drop(core);
                reactor.turn(Some(Duration::from_millis(1))).unwrap();
                core = inner.core.borrow_mut();
            }
            core.wake_op = real_wake;
        }
        let start = Instant::now();
        while !inner.core.borrow().wake_armed {
            assert!(start.elapsed() < Duration::from_secs(5), "the wake read was never re-armed");
            reactor.turn(Some(Duration::from_millis(10))).unwrap();
        }
    }

    /// A wake read the kernel cancels while the reactor runs (io_uring
    /// cancels a thread's requests when that thread exits, and a reactor
    /// moved to another thread, as compat-mio's `Poll` is, outlives the
    /// thread that armed it) is re-armed at once: a remote wake-up after it
    /// still ends a blocking turn. It used to be taken for shutdown and
    /// never re-armed, so that turn slept until its timeout.
    #[test]
    fn a_wake_read_cancelled_from_outside_is_re_armed() {
        let reactor = Reactor::new().unwrap();
        let inner = &reactor.inner;
        inner.core.borrow_mut().driver.cancel(WAKE_TOKEN);
        for _ in 0..3 {
            reactor.turn(Some(Duration::from_millis(1))).unwrap();
        }
        assert!(inner.core.borrow().wake_armed, "the cancelled wake read was not re-armed");
        let waited = raise_from_another_thread(&reactor, Some(Duration::from_secs(5)));
        let waited = waited.expect("the raise was lost");
        assert!(
            waited < Duration::from_secs(2),
            "a remote wake-up took {waited:?} to end a blocking turn"
        );
    }

    /// Raises a fresh registration from another thread 20 ms from now and
    /// turns `reactor` (each turn waiting up to `timeout`) until the packet
    /// arrives or 2 s pass more than the wait; returns how long it took, or
    /// `None` if the raise never arrived.
    fn raise_from_another_thread(reactor: &Reactor, timeout: Option<Duration>) -> Option<Duration> {
        let reg = reactor.register();
        let signaler = reg.signaler();
        let raiser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            signaler.raise(Signals::READABLE, 1).unwrap();
        });
        let start = Instant::now();
        let mut got = PacketList::new();
        let give_up = timeout.unwrap_or(Duration::ZERO) + Duration::from_secs(2);
        while got.is_empty() && start.elapsed() < give_up {
            reactor.turn(timeout).unwrap();
            got = reg.try_drain();
        }
        raiser.join().unwrap();
        (!got.is_empty()).then(|| start.elapsed())
    }
}
