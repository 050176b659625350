//! W2 `fan_in`: 10,000 registrations, each signalled once per round, for R
//! rounds; the consumer must find and drain exactly the signalled ones.
//! Throughput is events delivered per second (its inverse is the cost per
//! event delivered).
//!
//! The producer is the consumer's own thread, raising all 10,000 and then
//! consuming, so that each round delivers each event exactly once and the
//! figure is the delivery path alone, with no coalescing across rounds and
//! no cross-core noise.
//!
//! * **tally**: one `Signaler` per registration, `raise(Signals::user(0), 1)`
//!   each; then one `turn(Some(0))`. Each registration holds a waker that
//!   records its index in a lock-free array (a `fetch_add` on a cursor and a
//!   store), so the consumer visits only the woken ones: it drains each with
//!   `poll_drain_into` and polls once more to leave its waker armed.
//! * **tally-epoll**: the tally program on a reactor built with
//!   `Backend::Epoll`.
//! * **mio**: 10,000 eventfds registered with one `Poll`; each is written
//!   once per round (`write(2)`), then `poll` (epoll_wait, 1024 events at a
//!   time) and one `read(2)` per event.
//! * **tokio**: 10,000 tasks on a `current_thread` runtime, each awaiting its
//!   own `Notify`; the driving task calls `notify_one` on each and awaits a
//!   round-done `Notify` that the last task of the round triggers. This is
//!   tokio's user-space signal path (task wake and poll per event), not its
//!   I/O driver.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tally_reactor::{Backend, PacketList, Registration, Signaler, Signals};
use tokio::sync::Notify;

use super::{Config, tally_reactor_on, tokio_runtime};
use crate::harness::{Case, Engine, Run, Spec, Window};
use crate::sys;

/// Registrations (sources, tasks) per round.
pub const FAN: usize = 10_000;

/// The W2 spec. The count is events: rounds × [`FAN`].
pub fn spec(cfg: Config) -> Spec {
    let rounds = cfg.pick(20, 200);
    Spec {
        name: "W2 fan_in".into(),
        unit: "events/s",
        count: rounds * FAN as u64,
        warmup: 2 * FAN as u64,
        cases: vec![
            Case::new(Engine::Tally, |n| tally(n, Backend::Auto)),
            Case::new(Engine::TallyEpoll, |n| tally(n, Backend::Epoll)),
            Case::new(Engine::Mio, mio),
            Case::new(Engine::Tokio, tokio),
        ],
    }
}

/// Indices of woken registrations, appended without a lock.
///
/// Each registration's waker is taken by the reactor when it fires and
/// stored again only when the consumer polls it, so at most [`FAN`] wakes
/// land between two resets.
struct WokenList {
    slots: Box<[AtomicU32]>,
    len: AtomicUsize,
}

/// A waker that appends its registration's index to a [`WokenList`].
struct IndexWaker {
    index: u32,
    woken: Arc<WokenList>,
}

impl Wake for IndexWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let at = self.woken.len.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.woken.slots.get(at) {
            slot.store(self.index, Ordering::Relaxed);
        }
    }
}

fn tally(n: u64, backend: Backend) -> io::Result<Run> {
    let reactor = tally_reactor_on(backend)?;
    let woken = Arc::new(WokenList {
        slots: (0..FAN).map(|_| AtomicU32::new(0)).collect(),
        len: AtomicUsize::new(0),
    });
    let regs: Vec<Registration> = (0..FAN).map(|_| reactor.register()).collect();
    let signalers: Vec<Signaler> = regs.iter().map(Registration::signaler).collect();
    let wakers: Vec<Waker> = (0..FAN)
        .map(|i| Waker::from(Arc::new(IndexWaker { index: i as u32, woken: woken.clone() })))
        .collect();
    let mut list = PacketList::new();
    // Arm every waker.
    for (reg, waker) in regs.iter().zip(&wakers) {
        let _ = reg.poll_drain_into(&mut Context::from_waker(waker), &mut list);
    }
    list.clear();
    let window = Window::open();
    let mut seen = 0u64;
    while seen < n {
        for s in &signalers {
            let _ = s.raise(Signals::user(0), 1)?;
        }
        let target = (seen + FAN as u64).min(n);
        while seen < target {
            reactor.turn(Some(Duration::ZERO))?;
            let woke = woken.len.swap(0, Ordering::Relaxed).min(FAN);
            for slot in &woken.slots[..woke] {
                let i = slot.load(Ordering::Relaxed) as usize;
                let mut cx = Context::from_waker(&wakers[i]);
                // Drain, then poll again so that the waker is stored for the
                // next round (a drain that returns Ready stores none).
                while regs[i].poll_drain_into(&mut cx, &mut list).is_ready() {
                    for p in &list {
                        if let Some(s) = p.as_signal() {
                            seen += u64::from(s.count.get());
                        }
                    }
                    list.clear();
                }
            }
        }
    }
    Ok(window.close(seen))
}

fn mio(n: u64) -> io::Result<Run> {
    let (fds, err) = sys::eventfds(FAN);
    if let Some(e) = err {
        return Err(e);
    }
    let mut poll = Poll::new()?;
    for (i, fd) in fds.iter().enumerate() {
        poll.registry().register(&mut SourceFd(&fd.as_raw_fd()), Token(i), Interest::READABLE)?;
    }
    let raws: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut events = Events::with_capacity(1024);
    let window = Window::open();
    let mut seen = 0u64;
    while seen < n {
        for &fd in &raws {
            sys::eventfd_add(fd, 1)?;
        }
        let target = (seen + FAN as u64).min(n);
        while seen < target {
            crate::workloads::mio_poll(&mut poll, &mut events, Some(Duration::ZERO))?;
            for ev in events.iter() {
                seen += sys::eventfd_take(raws[ev.token().0])?;
            }
        }
    }
    let run = window.close(seen);
    drop(fds);
    Ok(run)
}

/// The state tokio's tasks share.
struct FanIn {
    notifies: Vec<Notify>,
    done: AtomicU64,
    round_done: Notify,
}

fn tokio(n: u64) -> io::Result<Run> {
    let rt = tokio_runtime()?;
    rt.block_on(async {
        let shared = Arc::new(FanIn {
            notifies: (0..FAN).map(|_| Notify::new()).collect(),
            done: AtomicU64::new(0),
            round_done: Notify::new(),
        });
        let tasks: Vec<_> = (0..FAN)
            .map(|i| {
                let shared = shared.clone();
                tokio::spawn(async move {
                    loop {
                        shared.notifies[i].notified().await;
                        if shared.done.fetch_add(1, Ordering::Relaxed) + 1 == FAN as u64 {
                            shared.done.store(0, Ordering::Relaxed);
                            shared.round_done.notify_one();
                        }
                    }
                })
            })
            .collect();
        // Let every task reach its first await.
        tokio::task::yield_now().await;
        let window = Window::open();
        let mut seen = 0u64;
        while seen < n {
            for notify in &shared.notifies {
                notify.notify_one();
            }
            shared.round_done.notified().await;
            seen += FAN as u64;
        }
        let run = window.close(seen);
        for t in tasks {
            t.abort();
        }
        Ok(run)
    })
}
