//! The coordinator: a thread with a `LocalReactor` of its own that watches
//! the workers' liveness, reads the process's signals off one signalfd and
//! relays them, and prints a metrics snapshot on `SIGUSR2`.
//!
//! # Liveness
//!
//! Each worker counts its cranks in a [`Heartbeat`] (a relaxed atomic add
//! per crank, no syscall) and marks when it parks in the reactor. The
//! coordinator samples the counts every quarter of the stall threshold: a
//! worker whose count has not moved for the threshold while it was not
//! parked (a task, or a spawn's closure, is blocking its thread) is
//! reported as stalled, once per stall, with a line on stderr naming the
//! worker, how long it has been stuck and what it was polling (a task's
//! slot, or its own loop), and counted in [`WorkerStats`].
//! An idle worker is parked, so it is never reported.
//!
//! # Signals
//!
//! The runtime's signals are blocked in the thread that builds it, before
//! any worker starts, so every worker and the coordinator inherit the mask
//! and only the coordinator's signalfd sees them. Each delivery batch is
//! relayed to every [`SignalReceiver`] that asked for the signal, as a
//! counted raise on a registration of the receiver's own reactor: a storm
//! costs each receiver one wake-up, and the count says how many arrived.
//! A `SIGINT` or `SIGTERM` that no receiver asked for starts a graceful
//! shutdown; a `SIGUSR2` that no receiver asked for prints the snapshot.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tally_reactor::{
    Backend, Count, Packet, PacketKind, PacketList, ProcessSignalPacket, Registration, Signaler,
    Signals,
};

use super::inbox::{Inbox, shut_down};
use crate::executor::Heartbeat;

/// A worker's stall record, written by the coordinator.
#[derive(Default)]
pub(super) struct Stalls {
    count: AtomicU64,
    longest_us: AtomicU64,
}

/// What the coordinator knows of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStats {
    /// The backend its reactor runs on.
    pub backend: Backend,
    /// Cranks it has run.
    pub cranks: u64,
    /// Stalls reported (see the module doc, "Liveness").
    pub stalls: u64,
    /// The longest stall seen, as sampled (to a quarter threshold).
    pub longest_stall: Duration,
}

/// One worker, as the coordinator watches it.
pub(super) struct Watched {
    pub(super) heartbeat: Arc<Heartbeat>,
    pub(super) stalls: Stalls,
    pub(super) backend: Backend,
}

impl Watched {
    pub(super) fn stats(&self) -> WorkerStats {
        WorkerStats {
            backend: self.backend,
            cranks: self.heartbeat.cranks.load(Ordering::Relaxed),
            stalls: self.stalls.count.load(Ordering::Relaxed),
            longest_stall: Duration::from_micros(self.stalls.longest_us.load(Ordering::Relaxed)),
        }
    }
}

/// What the coordinator shares with the runtime and its handles.
pub(super) struct Shared {
    pub(super) workers: Vec<Watched>,
    pub(super) inboxes: Vec<Arc<Inbox>>,
    /// The signals the runtime reads.
    pub(super) signals: Vec<i32>,
    /// Receivers, by signal: each a raise on a receiver's registration.
    relays: Mutex<Vec<(i32, Signaler)>>,
    started: Instant,
}

impl Shared {
    pub(super) fn new(workers: Vec<Watched>, inboxes: Vec<Arc<Inbox>>, signals: Vec<i32>) -> Self {
        Shared {
            workers,
            inboxes,
            signals,
            relays: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    /// A receiver for `signos`, on the reactor of the executor running on
    /// this thread.
    pub(super) fn receiver(&self, signos: &[i32]) -> io::Result<SignalReceiver> {
        if let Some(s) = signos.iter().find(|s| !self.signals.contains(s)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("signal {s} is not one the runtime reads: add it with Builder::signals"),
            ));
        }
        let reactor = crate::reactor();
        let regs: Vec<(i32, Registration)> =
            signos.iter().map(|&s| (s, reactor.register())).collect();
        self.relays.lock().extend(regs.iter().map(|(s, r)| (*s, r.signaler())));
        Ok(SignalReceiver { regs })
    }

    /// Relays `n` deliveries of `signo` to its receivers; returns how many
    /// took them. Receivers that are gone are forgotten.
    fn relay(&self, signo: i32, n: u32) -> usize {
        let mut relays = self.relays.lock();
        relays.retain(|(s, r)| *s != signo || r.raise(Signals::user(0), n).is_ok());
        relays.iter().filter(|(s, _)| *s == signo).count()
    }
}

/// Process signals relayed by a [`Runtime`](super::Runtime)'s coordinator;
/// see [`Handle::signals`](super::Handle::signals).
pub struct SignalReceiver {
    regs: Vec<(i32, Registration)>,
}

impl SignalReceiver {
    /// Waits for signals and returns one `ProcessSignal` packet per signal
    /// number, with the deliveries since the last receive.
    pub async fn recv(&mut self) -> PacketList {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for signals; see [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<PacketList> {
        let mut out = PacketList::new();
        for (signo, reg) in &self.regs {
            let mut raised = PacketList::new();
            if reg.poll_drain_into(cx, &mut raised).is_pending() {
                continue;
            }
            let n: u32 = raised.iter().filter_map(|p| p.as_signal()).map(|s| s.count.get()).sum();
            if n > 0 {
                let p = ProcessSignalPacket { signo: *signo, count: Count::new(n) };
                out.push(Packet::new(reg.token(), 0, PacketKind::ProcessSignal(p)));
            }
        }
        if out.is_empty() { Poll::Pending } else { Poll::Ready(out) }
    }
}

impl fmt::Debug for SignalReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let signos: Vec<i32> = self.regs.iter().map(|(s, _)| *s).collect();
        f.debug_struct("SignalReceiver").field("signals", &signos).finish()
    }
}

/// Per worker: the count last seen, since when, and whether this stall was
/// reported.
struct Seen {
    cranks: u64,
    since: Instant,
    reported: bool,
}

/// Samples every worker once (see the module doc, "Liveness").
fn sample(shared: &Shared, seen: &mut [Seen], threshold: Duration) {
    let now = Instant::now();
    for (i, (w, s)) in shared.workers.iter().zip(seen).enumerate() {
        let cranks = w.heartbeat.cranks.load(Ordering::Relaxed);
        if cranks != s.cranks || w.heartbeat.parked.load(Ordering::Relaxed) {
            *s = Seen { cranks, since: now, reported: false };
            continue;
        }
        let stuck = now - s.since;
        if stuck < threshold {
            continue;
        }
        w.stalls.longest_us.fetch_max(stuck.as_micros() as u64, Ordering::Relaxed);
        if !s.reported {
            s.reported = true;
            w.stalls.count.fetch_add(1, Ordering::Relaxed);
            let running = match w.heartbeat.running.load(Ordering::Relaxed) {
                0 => "between polls".to_string(),
                Heartbeat::MAIN => "in its own loop (a spawn closure, or block_on's future)".into(),
                slot => format!("polling the task in slot {}", slot - 1),
            };
            eprintln!(
                "tally: worker {i} stalled: no crank for {stuck:?} while not parked, {running} \
                 (a blocking call?); cranks stuck at {cranks}"
            );
        }
    }
}

/// The `SIGUSR2` snapshot: the coordinator's own lines, then one line per
/// worker printed by the worker itself (its reactor's metrics), which a
/// stalled worker prints only once it moves again.
fn snapshot(shared: &Shared) {
    // SAFETY: a zeroed timespec is valid; clock_gettime writes it.
    let mut cpu: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut cpu) };
    let cpu = Duration::new(cpu.tv_sec as u64, cpu.tv_nsec as u32);
    eprintln!(
        "tally runtime: uptime {:?}, process CPU {cpu:?}, {} workers",
        shared.started.elapsed(),
        shared.workers.len()
    );
    for (i, (w, inbox)) in shared.workers.iter().zip(&shared.inboxes).enumerate() {
        let s = w.stats();
        eprintln!(
            "tally worker {i}: {:?}, {} cranks, {} stalls, longest {:?}",
            s.backend, s.cranks, s.stalls, s.longest_stall
        );
        let live = move || {
            let m = crate::reactor().metrics();
            eprintln!(
                "tally worker {i}: {} live tasks, {} turns, {} packets, {} coalesced raises, {} \
                 undrained, {} registrations, {} ops in flight",
                crate::context::current().tasks.borrow().len(),
                m.turns,
                m.packets,
                m.coalesced_raises,
                m.undrained,
                m.registrations,
                m.ops_in_flight
            );
        };
        // A worker shutting down takes no jobs: it has no line then.
        let _ = inbox.push(Box::new(live));
    }
}

/// The coordinator's thread: until `stop` is raised (or dropped), samples
/// liveness and relays the signals in `shared.signals`.
pub(super) async fn run(
    shared: &Shared,
    threshold: Duration,
    grace: Duration,
    stop: Registration,
) -> io::Result<()> {
    let now = Instant::now();
    let mut seen: Vec<Seen> = shared
        .workers
        .iter()
        .map(|w| Seen {
            cranks: w.heartbeat.cranks.load(Ordering::Relaxed),
            since: now,
            reported: false,
        })
        .collect();
    let mut signals = if shared.signals.is_empty() {
        None
    } else {
        Some(crate::signal::signals(&shared.signals)?)
    };
    let mut tick = crate::time::interval(threshold / 4);
    enum Event {
        Stop,
        Tick,
        /// Boxed: a packet list is large, and a batch of signals is rare.
        Signals(Box<io::Result<PacketList>>),
    }
    loop {
        let event = poll_fn(|cx| {
            if stop.poll_packets(cx).is_ready() {
                return Poll::Ready(Event::Stop);
            }
            if let Some(sigs) = &mut signals {
                if let Poll::Ready(r) = sigs.poll_recv(cx) {
                    return Poll::Ready(Event::Signals(Box::new(r)));
                }
            }
            tick.poll_tick(cx).map(|_| Event::Tick)
        })
        .await;
        match event {
            Event::Stop => return Ok(()),
            Event::Tick => sample(shared, &mut seen, threshold),
            Event::Signals(packets) => {
                for p in &(*packets)? {
                    let PacketKind::ProcessSignal(s) = p.kind() else { continue };
                    if shared.relay(s.signo, s.count.get()) > 0 {
                        continue;
                    }
                    match s.signo {
                        libc::SIGINT | libc::SIGTERM => {
                            eprintln!(
                                "tally runtime: signal {}: shutting down (grace {grace:?})",
                                s.signo
                            );
                            shut_down(&shared.inboxes, grace);
                        }
                        libc::SIGUSR2 => snapshot(shared),
                        _ => {}
                    }
                }
            }
        }
    }
}
