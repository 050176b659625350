//! The OS boundary: every backend lives below here, one per module.
//!
//! The core (`core/`) owns all semantics: tokens and generations,
//! registrations, back pressure, cancellation, remote wake-ups. A backend is
//! thin, and imports nothing above `sys/` but the operation it is handed
//! (`op.rs`) and the settings (`config.rs`), two leaves. Each one provides:
//!
//! * `submit(token, &mut OpKind)`: start an operation, tagged with `token`,
//!   whose completion(s) come back as [`Cqe`]s with that `user_data`;
//! * `cancel(token)`: ask for an early final completion;
//! * `enter(wait, timeout)`: submit what is queued and wait for at most one
//!   completion or the timeout, retrying nothing itself (EINTR means "reap");
//! * `reap(&mut Vec<Cqe>)` and `flush_overflow()`: hand over every completion;
//! * provided-buffer groups for multishot receives;
//! * its name and [`Features`], for metrics and for tests that must skip.
//!
//! The backend is chosen at run time with an enum, never `dyn`.

pub(crate) mod buffers;
mod epoll;
pub(crate) mod syscall;
pub(crate) mod uring;

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use tally_packets::{Signals, Token};

use crate::config::{Backend, Config, Fallback};

use crate::op::OpKind;
use buffers::{BufPool, Feed};

/// One completion, as a backend reports it: the `user_data` (token) it was
/// submitted with, its result (bytes, an fd, a negated errno, or for a
/// poll a `poll(2)` event mask), and flags in this module's own encoding:
/// [`Cqe::MORE`], and [`Cqe::BUFFER`] with a buffer id in the upper 16
/// bits. (The io_uring backend's CQE flags use the same bits, so it copies
/// them unchanged; another backend builds them.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cqe {
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    pub(crate) flags: u32,
}

impl Cqe {
    /// The completion names a provided buffer, whose id is `flags >> 16`.
    pub(crate) const BUFFER: u32 = 1 << 0;
    /// More completions of the same (multishot) operation follow.
    pub(crate) const MORE: u32 = 1 << 1;

    /// Whether more completions of the operation follow.
    #[inline]
    pub(crate) fn more(&self) -> bool {
        self.flags & Cqe::MORE != 0
    }

    /// The provided buffer the completion filled, if any.
    #[inline]
    pub(crate) fn buffer_id(&self) -> Option<u16> {
        (self.flags & Cqe::BUFFER != 0).then_some((self.flags >> 16) as u16)
    }

    /// What a poll's result reports, decoded from its `poll(2)` mask
    /// (which epoll's event bits match).
    #[inline]
    pub(crate) fn readiness(&self) -> Signals {
        let revents = self.result as i16;
        let map = [
            (libc::POLLIN, Signals::READABLE),
            (libc::POLLOUT, Signals::WRITABLE),
            (libc::POLLPRI, Signals::PRIORITY),
            (libc::POLLRDHUP, Signals::READ_CLOSED),
            (libc::POLLHUP, Signals::READ_CLOSED | Signals::WRITE_CLOSED),
            (libc::POLLERR, Signals::ERROR),
        ];
        // Branch-free: each bit selects its signals by a mask.
        map.iter().fold(Signals::NONE, |s, &(bit, signal)| {
            let on = u32::from(revents & bit != 0);
            s | Signals::from_bits(signal.bits() & on.wrapping_neg())
        })
    }
}

/// The `poll(2)` mask for `interest`; epoll's event bits are the same.
pub(crate) fn poll_mask(interest: Signals) -> u32 {
    let mut mask = 0;
    if interest.contains(Signals::READABLE) {
        mask |= libc::POLLIN;
    }
    if interest.contains(Signals::WRITABLE) {
        mask |= libc::POLLOUT;
    }
    if interest.contains(Signals::PRIORITY) {
        mask |= libc::POLLPRI;
    }
    if interest.contains(Signals::READ_CLOSED) {
        mask |= libc::POLLRDHUP;
    }
    mask as u16 as u32
}

/// What the kernel under a backend can do. Tests consult it to skip, with a
/// printed reason, what the running kernel lacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// `IORING_SETUP_SINGLE_ISSUER` with `IORING_SETUP_DEFER_TASKRUN`.
    pub single_issuer_defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` with `IORING_SETUP_TASKRUN_FLAG`.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SUBMIT_ALL`.
    pub submit_all: bool,
    /// `IORING_FEAT_NODROP`: the kernel never drops a completion.
    pub nodrop: bool,
    /// `IOSQE_CQE_SKIP_SUCCESS`, used for cancel requests.
    pub skip_success: bool,
    /// Multishot poll.
    pub multishot_poll: bool,
    /// Multishot accept.
    pub multishot_accept: bool,
    /// Multishot recv with provided buffers.
    pub multishot_recv: bool,
    /// Provided buffer rings.
    pub buf_ring: bool,
    /// The ring's fd is registered (`IORING_REGISTER_RING_FDS`), so each
    /// `io_uring_enter` skips the fd lookup.
    pub registered_ring: bool,
    /// The file operations (`Op::open_at`, `fsync`, `statx`, `unlink_at`,
    /// `rename_at`, `mkdir_at`) are the kernel's own asynchronous
    /// operations. Optional: a ring without them is still used, and on it
    /// those ops complete with `-EINVAL`. On epoll they are plain system
    /// calls made inside `submit`, blocking the reactor's thread for as
    /// long as the file system takes, and this is false: `tally::fs` then
    /// runs them on its blocking pool instead.
    pub file_ops: bool,
    /// `Op::ftruncate` is a ring operation (`IORING_OP_FTRUNCATE`, Linux
    /// 6.9). False on epoll, where it is a system call inside `submit`.
    pub ftruncate: bool,
}

/// The backend in use, and the buffer groups its receives fill.
pub(crate) struct Driver {
    engine: Engine,
    /// Why `Backend::Auto` is on epoll, if it is.
    fallback: Option<Fallback>,
    /// Dropped after `engine`: a group's memory outlives the ring that
    /// the kernel fills it through.
    pools: Vec<BufPool>,
}

enum Engine {
    Uring(uring::Uring),
    Epoll(epoll::Epoll),
}

impl Driver {
    /// The backend `config` asks for (`Auto`: io_uring, else epoll).
    ///
    /// # Errors
    ///
    /// A forced io_uring that cannot start, with what failed and what to
    /// do; epoll's own set-up failing; a bad `TALLY_BACKEND`.
    pub(crate) fn new(config: &Config) -> io::Result<Driver> {
        let (engine, fallback) = match config.backend.resolve()? {
            Backend::IoUring => {
                let u = uring::Uring::new(config).map_err(io_uring_unavailable)?;
                (Engine::Uring(u), None)
            }
            Backend::Epoll => (Engine::Epoll(epoll::Epoll::new()?), None),
            _ => match uring::Uring::new(config) {
                Ok(u) => (Engine::Uring(u), None),
                Err(e) => {
                    let errno = e.error.raw_os_error().unwrap_or(libc::EOPNOTSUPP);
                    let fallback = Fallback { step: e.step, errno };
                    (Engine::Epoll(epoll::Epoll::new()?), Some(fallback))
                }
            },
        };
        Ok(Driver { engine, fallback, pools: Vec::new() })
    }

    pub(crate) fn backend(&self) -> Backend {
        match &self.engine {
            Engine::Uring(_) => Backend::IoUring,
            Engine::Epoll(_) => Backend::Epoll,
        }
    }

    pub(crate) fn fallback(&self) -> Option<Fallback> {
        self.fallback
    }

    pub(crate) fn features(&self) -> Features {
        match &self.engine {
            Engine::Uring(u) => u.features(),
            Engine::Epoll(e) => e.features(),
        }
    }

    /// Kernel entries made so far, whatever their reason.
    pub(crate) fn enters(&self) -> u64 {
        match &self.engine {
            Engine::Uring(u) => u.enters(),
            Engine::Epoll(e) => e.enters(),
        }
    }

    /// Whether the last enter's wait was cut short by a signal handler
    /// (`EINTR`).
    pub(crate) fn interrupted(&self) -> bool {
        match &self.engine {
            Engine::Uring(u) => u.interrupted(),
            Engine::Epoll(e) => e.interrupted(),
        }
    }

    /// The fd that is readable while completions wait: the ring's, or the
    /// epoll instance's.
    pub(crate) fn as_raw_fd(&self) -> RawFd {
        match &self.engine {
            Engine::Uring(u) => u.as_raw_fd(),
            Engine::Epoll(e) => e.as_raw_fd(),
        }
    }

    /// # Safety
    ///
    /// `kind` must stay where it is, with its resources alive, until the
    /// operation's final completion has been reaped.
    #[inline]
    pub(crate) unsafe fn submit(&mut self, token: Token, kind: &mut OpKind) {
        match &mut self.engine {
            // SAFETY: forwarded from this function's contract.
            Engine::Uring(u) => unsafe { u.submit(token, kind) },
            // SAFETY: as above.
            Engine::Epoll(e) => unsafe { e.submit(token, kind, &mut self.pools) },
        }
    }

    pub(crate) fn cancel(&mut self, token: Token) {
        match &mut self.engine {
            Engine::Uring(u) => u.cancel(token),
            Engine::Epoll(e) => e.cancel(token),
        }
    }

    pub(crate) fn enter(&mut self, wait: bool, timeout: Option<Duration>) -> io::Result<bool> {
        match &mut self.engine {
            Engine::Uring(u) => u.enter(wait, timeout),
            Engine::Epoll(e) => e.enter(wait, timeout, &mut self.pools),
        }
    }

    pub(crate) fn reap(&mut self, out: &mut Vec<Cqe>) {
        match &mut self.engine {
            Engine::Uring(u) => u.reap(out),
            Engine::Epoll(e) => e.reap(out),
        }
    }

    pub(crate) fn flush_overflow(&mut self) -> bool {
        match &mut self.engine {
            Engine::Uring(u) => u.flush_overflow(),
            Engine::Epoll(_) => false,
        }
    }

    pub(crate) fn has_completions(&mut self) -> bool {
        match &mut self.engine {
            Engine::Uring(u) => u.has_completions(),
            Engine::Epoll(e) => e.has_completions(),
        }
    }

    /// Creates a buffer group of `entries` buffers of `buf_size` bytes and
    /// returns its id.
    pub(crate) fn add_buf_ring(&mut self, entries: u16, buf_size: u32) -> io::Result<u16> {
        let group = u16::try_from(self.pools.len())
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "too many buffer groups"))?;
        BufPool::check(entries, buf_size)?;
        let pool = match &mut self.engine {
            Engine::Uring(u) => {
                let feed = Feed::Kernel(uring::KernelRing::new(entries)?);
                let pool = BufPool::new(entries, buf_size, feed)?;
                if let Feed::Kernel(ring) = &pool.feed {
                    // SAFETY: the ring lives in `self.pools`, which drops
                    // after the backend (field order), or is leaked.
                    unsafe { u.register_buf_ring(ring, group)? };
                }
                pool
            }
            Engine::Epoll(_) => BufPool::new(entries, buf_size, epoll::Epoll::feed())?,
        };
        self.pools.push(pool);
        Ok(group)
    }

    /// Leaks every buffer group, memory and all: for a shutdown that gave
    /// up waiting on the kernel, which may still write into them.
    pub(crate) fn leak_buf_rings(&mut self) {
        std::mem::forget(std::mem::take(&mut self.pools));
        if let Engine::Uring(u) = &mut self.engine {
            u.forget_buf_groups();
        }
    }

    pub(crate) fn buf_ring(&mut self, group: u16) -> Option<&mut BufPool> {
        self.pools.get_mut(group as usize)
    }
}

/// The error a forced io_uring (`Backend::IoUring`, `TALLY_BACKEND=io_uring`)
/// returns when the ring cannot be used: the step, the errno, the likely
/// causes, and the way out.
fn io_uring_unavailable(e: uring::SetupError) -> io::Error {
    let causes = match e.error.raw_os_error() {
        Some(libc::EPERM) => {
            "a seccomp profile that blocks io_uring (Docker's and containerd's defaults \
             do), or kernel.io_uring_disabled set to 1 or 2"
        }
        Some(libc::ENOSYS) => "a kernel built without io_uring, or a sandbox (gVisor) without it",
        // Seen on 6.18 too (reactor/tests/faults.rs): without CAP_IPC_LOCK
        // the ring and a registered buffer ring still count against the
        // memlock limit, per user.
        Some(libc::ENOMEM) => {
            "RLIMIT_MEMLOCK too low for the ring or its buffer rings (raise it with              `ulimit -l`, or ask for fewer entries)"
        }
        _ => "a kernel too old for the features tally needs (Linux 5.19 or later)",
    };
    io::Error::new(
        e.error.kind(),
        format!(
            "io_uring cannot be used: {} failed: {}. Likely cause: {causes}. \
             Set TALLY_BACKEND=epoll (or Builder::backend(Backend::Epoll)) to run on epoll.",
            e.step, e.error
        ),
    )
}
