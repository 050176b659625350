//! W1 `signal_flood`: one producer thread raises N events at one consumer;
//! the consumer counts them until it has seen all N. Reported twice: events
//! per wall-clock second, and events per second of the consumer thread's
//! CPU time (`CLOCK_THREAD_CPUTIME_ID`).
//!
//! * **tally**: the producer calls `Signaler::raise(Signals::user(0), 1)` N
//!   times; the consumer thread `turn(None)`s the reactor and drains the
//!   registration, adding up the counts of its signal packets.
//! * **tally-epoll**: the tally program on a reactor built with
//!   `Backend::Epoll`.
//! * **mio**: the producer `write(2)`s 1 to an eventfd once per event; the
//!   consumer `Poll::poll`s (epoll_wait) and `read(2)`s the eventfd until
//!   `EAGAIN`, adding up the counter values it reads.
//! * **tokio**: the same coalescing pattern built from tokio's own parts:
//!   the producer does `AtomicU64::fetch_add(1)` and calls
//!   `Notify::notify_one` only when the count was zero; the consumer task on
//!   a `current_thread` runtime swaps the count out and awaits `notified()`
//!   when it is empty. (An `mpsc` channel would cost a queue slot per event;
//!   an eventfd through `AsyncFd` would be the mio case plus tokio's
//!   overhead.)

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tally_reactor::{Backend, PacketList, Signals};
use tokio::sync::Notify;

use super::{Config, drain_into, tally_reactor_on, tokio_runtime};
use crate::harness::{Case, Engine, Run, Spec, Window};
use crate::sys;

/// The W1 spec.
pub fn spec(cfg: Config) -> Spec {
    let count = cfg.pick(2_000_000, 10_000_000);
    Spec {
        name: "W1 signal_flood".into(),
        unit: "events/s",
        count,
        warmup: count / 10,
        cases: vec![
            Case::new(Engine::Tally, |n| tally(n, Backend::Auto)),
            Case::new(Engine::TallyEpoll, |n| tally(n, Backend::Epoll)),
            Case::new(Engine::Mio, mio),
            Case::new(Engine::Tokio, tokio),
        ],
    }
}

/// Joins the producer, turning its panic or error into an `io::Error`.
fn join(h: thread::JoinHandle<io::Result<()>>) -> io::Result<()> {
    h.join().map_err(|_| io::Error::other("producer thread panicked"))?
}

fn tally(n: u64, backend: Backend) -> io::Result<Run> {
    let reactor = tally_reactor_on(backend)?;
    let reg = reactor.register();
    let signaler = reg.signaler();
    let go = Arc::new(Barrier::new(2));
    let go2 = go.clone();
    let producer = thread::spawn(move || -> io::Result<()> {
        go2.wait();
        for _ in 0..n {
            let _ = signaler.raise(Signals::user(0), 1)?;
        }
        Ok(())
    });
    let mut list = PacketList::new();
    go.wait();
    let window = Window::open_with_cpu();
    let mut seen = 0u64;
    while seen < n {
        reactor.turn(None)?;
        drain_into(&reg, &mut list);
        for p in &list {
            if let Some(s) = p.as_signal() {
                seen += u64::from(s.count.get());
            }
        }
        list.clear();
    }
    let run = window.close(seen);
    join(producer)?;
    super::debug_metrics("W1 tally", &reactor);
    Ok(run)
}

fn mio(n: u64) -> io::Result<Run> {
    let fd = Arc::new(sys::eventfd()?);
    let mut poll = Poll::new()?;
    let raw = fd.as_raw_fd();
    poll.registry().register(&mut SourceFd(&raw), Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let go = Arc::new(Barrier::new(2));
    let go2 = go.clone();
    let pfd = fd.clone();
    let producer = thread::spawn(move || -> io::Result<()> {
        go2.wait();
        for _ in 0..n {
            sys::eventfd_add(pfd.as_raw_fd(), 1)?;
        }
        Ok(())
    });
    go.wait();
    let window = Window::open_with_cpu();
    let mut seen = 0u64;
    while seen < n {
        crate::workloads::mio_poll(&mut poll, &mut events, None)?;
        for _ in events.iter() {
            loop {
                let v = sys::eventfd_take(raw)?;
                if v == 0 {
                    break;
                }
                seen += v;
            }
        }
    }
    let run = window.close(seen);
    join(producer)?;
    Ok(run)
}

/// A counted signal built from tokio parts.
struct Flood {
    count: AtomicU64,
    notify: Notify,
}

fn tokio(n: u64) -> io::Result<Run> {
    let rt = tokio_runtime()?;
    let shared = Arc::new(Flood { count: AtomicU64::new(0), notify: Notify::new() });
    let go = Arc::new(Barrier::new(2));
    let go2 = go.clone();
    let p = shared.clone();
    let producer = thread::spawn(move || -> io::Result<()> {
        go2.wait();
        for _ in 0..n {
            if p.count.fetch_add(1, Ordering::Release) == 0 {
                p.notify.notify_one();
            }
        }
        Ok(())
    });
    go.wait();
    let run = rt.block_on(async {
        let window = Window::open_with_cpu();
        let mut seen = 0u64;
        while seen < n {
            match shared.count.swap(0, Ordering::Acquire) {
                0 => shared.notify.notified().await,
                c => seen += c,
            }
        }
        window.close(seen)
    });
    join(producer)?;
    Ok(run)
}
