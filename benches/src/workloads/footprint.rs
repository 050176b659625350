//! Bytes per idle registration, at N = 100k: the growth of the live heap
//! (from the counting allocator) while N registrations are made, divided by
//! N; and, where `/proc/meminfo` is readable, the growth of the kernel's
//! slab memory, divided by N.
//!
//! What one registration is differs by engine, and the figures say so:
//!
//! * **tally**: `Reactor::register()`: a slot in the reactor's slab (no fd,
//!   no kernel object). The heap figure includes slack in the slab's
//!   vectors, as a real program would carry.
//! * **mio**: an eventfd registered with a `Poll`. mio keeps nothing on the
//!   heap per registration; its cost is the kernel's epoll item, which the
//!   slab figure shows. The eventfds exist before the count starts.
//! * **tokio**: an eventfd wrapped in an `AsyncFd` on a `current_thread`
//!   runtime: tokio's per-registration `ScheduledIo` on the heap, and the
//!   epoll item in the kernel.
//! * **tokio-on-tally**: the same, with mio patched to compat-mio (run by
//!   the `tokio-on-tally` binary): `ScheduledIo`, compat-mio's table entry
//!   and source, the reactor's registration and its poll op on the heap,
//!   and the io_uring poll request (or epoll item) in the kernel.
//!
//! mio and tokio need an fd per registration: under a lower fd limit they
//! are measured at the largest N that fits, and the table prints the N.
//!
//! The handles the program holds (`Registration`, `AsyncFd`) live in vectors
//! allocated before the count starts, so they are not included.

use std::io;
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};
use tally_reactor::{Reactor, Registration};
use tokio::io::unix::AsyncFd;

use super::churn::{Borrowed, async_fd};
use super::tokio_runtime;
use crate::alloc;
use crate::harness::Engine;
use crate::report::Footprint;
use crate::sys;

/// Registrations measured per engine.
pub const N: usize = 100_000;

/// Heap and kernel deltas across `f`, per registration (`n` of them).
fn measure(n: usize, what: &str, f: impl FnOnce() -> io::Result<()>) -> io::Result<Footprint> {
    let heap0 = alloc::live_bytes();
    let slab0 = sys::kernel_slab_bytes();
    f()?;
    let heap = alloc::live_bytes().saturating_sub(heap0) as f64 / n as f64;
    let kernel = match (slab0, sys::kernel_slab_bytes()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / n as f64),
        _ => None,
    };
    Ok(Footprint { n, heap, kernel, what: what.into() })
}

/// Makes `n` registrations and measures them.
type Measure = fn(usize) -> io::Result<Footprint>;

/// The footprint of each engine, and notes for those that failed. Engines
/// that need an fd per registration make at most `fd_limit` less a margin.
pub fn run(fd_limit: u64) -> (Vec<(Engine, Footprint)>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let with_fds = (N as u64).min(fd_limit.saturating_sub(300)).max(1) as usize;
    let engines: [(Engine, Measure, usize); 3] =
        [(Engine::Tally, tally, N), (Engine::Mio, mio, with_fds), (Engine::Tokio, tokio, with_fds)];
    for (engine, f, n) in engines {
        match f(n) {
            Ok(fp) => out.push((engine, fp)),
            Err(e) => notes.push(format!("bytes per registration: {engine} failed: {e}")),
        }
    }
    // Fails, with why, if the child binary cannot be built.
    match crate::tokio_on_tally::footprint(with_fds) {
        Ok(fp) => out.push((Engine::TokioOnTally, fp)),
        Err(e) => notes.push(format!("bytes per registration: tokio-on-tally failed: {e}")),
    }
    (out, notes)
}

fn tally(n: usize) -> io::Result<Footprint> {
    let reactor = Reactor::new()?;
    let mut regs: Vec<Registration> = Vec::with_capacity(n);
    let fp = measure(n, "Reactor::register(), no fd", || {
        regs.extend((0..n).map(|_| reactor.register()));
        Ok(())
    })?;
    drop(regs);
    Ok(fp)
}

fn mio(n: usize) -> io::Result<Footprint> {
    let (fds, err) = sys::eventfds(n);
    if let Some(e) = err {
        return Err(io::Error::new(e.kind(), format!("fd limit at {} eventfds: {e}", fds.len())));
    }
    let poll = Poll::new()?;
    measure(n, "eventfd registered with Poll (fd made beforehand)", || {
        for (i, fd) in fds.iter().enumerate() {
            poll.registry().register(
                &mut SourceFd(&fd.as_raw_fd()),
                Token(i),
                Interest::READABLE,
            )?;
        }
        Ok(())
    })
}

/// The tokio footprint; `tokio-on-tally` measures it too, on compat-mio.
pub(crate) fn tokio(n: usize) -> io::Result<Footprint> {
    let (fds, err) = sys::eventfds(n);
    if let Some(e) = err {
        return Err(io::Error::new(e.kind(), format!("fd limit at {} eventfds: {e}", fds.len())));
    }
    let rt = tokio_runtime()?;
    let _guard = rt.enter();
    let mut afds: Vec<AsyncFd<Borrowed>> = Vec::with_capacity(n);
    let fp = measure(n, "eventfd in an AsyncFd (fd made beforehand)", || {
        for fd in &fds {
            // SAFETY: `fds` owns every eventfd and outlives `afds`.
            afds.push(unsafe { async_fd(Borrowed(fd.as_raw_fd())) }?);
        }
        // One turn of the driver: on compat-mio, where a registration is
        // armed by the poller, this arms them (for real mio, a no-op).
        rt.block_on(tokio::time::sleep(std::time::Duration::from_millis(1)));
        Ok(())
    })?;
    drop(afds);
    Ok(fp)
}
