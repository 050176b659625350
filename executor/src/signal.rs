//! Process signals as counted packets, through `signalfd(2)`.
//!
//! [`signals`] blocks the given signals in the calling thread and opens a
//! signalfd for them. Each delivery is read off the signalfd and counted;
//! a receive hands over one [`ProcessSignal`](crate::PacketKind::ProcessSignal)
//! packet per signal number with the number of deliveries since the last
//! receive.
//!
//! # The signal mask
//!
//! A signalfd only sees signals that are **blocked in every thread**:
//! a process-directed signal goes to any one thread that does not block it,
//! where its default action (often: terminate) runs instead. Threads
//! inherit the mask of the thread that spawns them, so call [`block`] (or
//! [`signals`]) at the top of `main`, before any thread is spawned.
//!
//! Standard signals also coalesce in the kernel: two `SIGUSR1`s sent before
//! the first is read count once. Real-time signals (`SIGRTMIN..`) queue.
//!
//! # Examples
//!
//! ```
//! let rt = tally::LocalReactor::new().unwrap();
//! rt.block_on(async {
//!     let mut sigs = tally::signal::signals(&[libc::SIGUSR2]).unwrap();
//!     // SAFETY: raise(3) has no preconditions; it signals this thread, which blocks SIGUSR2.
//!     unsafe { libc::raise(libc::SIGUSR2) };
//!     let packets = sigs.recv().await.unwrap();
//!     let p = packets[0].kind();
//!     assert!(matches!(p, tally::PacketKind::ProcessSignal(s) if s.signo == libc::SIGUSR2));
//! });
//! ```

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::task::{Context, Poll, ready};

use tally_reactor::{
    Count, Packet, PacketKind, PacketList, ProcessSignalPacket, Registration, Signals,
};

use crate::context;
use crate::sys::syscall;

/// `sizeof(struct signalfd_siginfo)`.
const SIGINFO_SIZE: usize = 128;

fn sigset(signos: &[i32]) -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &signo in signos {
        if signo == libc::SIGKILL || signo == libc::SIGSTOP {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("signal {signo} cannot be caught"),
            ));
        }
        // SAFETY: `set` is a valid sigset_t; sigaddset checks the range.
        if unsafe { libc::sigaddset(&mut set, signo) } != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{signo} is not a signal number"),
            ));
        }
    }
    Ok(set)
}

/// Blocks `signos` in the calling thread (and so in threads it spawns
/// afterwards). Call it at the top of `main` for signals you will read
/// with [`signals`].
///
/// # Errors
///
/// `InvalidInput` for `SIGKILL`, `SIGSTOP` or a number that is no signal.
pub fn block(signos: &[i32]) -> io::Result<()> {
    let set = sigset(signos)?;
    // SAFETY: `set` is a valid sigset_t; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Starts receiving `signos`: blocks them in this thread and opens a
/// signalfd registered with the running executor's reactor.
///
/// # Errors
///
/// `InvalidInput` for uncatchable or invalid signals; errors from
/// `signalfd(2)` or the reactor.
///
/// # Panics
///
/// Panics outside a running tally executor.
pub fn signals(signos: &[i32]) -> io::Result<ProcessSignals> {
    block(signos)?;
    let set = sigset(signos)?;
    // `set` is a valid sigset_t; -1 asks for a new fd.
    let fd = syscall!(signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))?;
    // SAFETY: signalfd just returned `fd`, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let reg = context::current().reactor.register_fd(fd.as_raw_fd(), Signals::READABLE)?;
    Ok(ProcessSignals { reg, fd, counts: Vec::new() })
}

/// A stream of process-signal packets; see [`signals`].
pub struct ProcessSignals {
    reg: Registration,
    fd: OwnedFd,
    /// (signo, deliveries) read but not yet handed over.
    counts: Vec<(i32, u32)>,
}

impl ProcessSignals {
    /// Waits for signals and returns one `ProcessSignal` packet per signal
    /// number, with its count since the last receive.
    ///
    /// # Errors
    ///
    /// An error reading the signalfd.
    pub async fn recv(&mut self) -> io::Result<PacketList> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for signals; see [`recv`](Self::recv).
    ///
    /// # Errors
    ///
    /// An error reading the signalfd.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<PacketList>> {
        loop {
            self.read_all()?;
            if !self.counts.is_empty() {
                let key = self.reg.token();
                let list = self
                    .counts
                    .drain(..)
                    .map(|(signo, n)| {
                        let p = ProcessSignalPacket { signo, count: Count::new(n) };
                        Packet::new(key, 0, PacketKind::ProcessSignal(p))
                    })
                    .collect();
                return Poll::Ready(Ok(list));
            }
            // Wait for a readable edge; the signal packet itself carries
            // nothing we need beyond "read now".
            let mut edges = PacketList::new();
            ready!(self.reg.poll_drain_into(cx, &mut edges));
        }
    }

    /// Reads every pending siginfo off the signalfd into `counts`.
    fn read_all(&mut self) -> io::Result<()> {
        let mut buf = [0u8; SIGINFO_SIZE * 16];
        loop {
            // `buf` is valid for `buf.len()` bytes of writes.
            let n = match syscall!(read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())) {
                Ok(n) => n as usize,
                Err(e) => {
                    return match e.kind() {
                        io::ErrorKind::WouldBlock => Ok(()),
                        io::ErrorKind::Interrupted => continue,
                        _ => Err(e),
                    };
                }
            };
            for info in buf[..n].chunks_exact(SIGINFO_SIZE) {
                let signo = i32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                match self.counts.iter_mut().find(|(s, _)| *s == signo) {
                    Some((_, c)) => *c = c.saturating_add(1),
                    None => self.counts.push((signo, 1)),
                }
            }
            if n < buf.len() {
                return Ok(());
            }
        }
    }
}

impl fmt::Debug for ProcessSignals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessSignals").field("fd", &self.fd.as_raw_fd()).finish()
    }
}
