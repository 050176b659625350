//! Signal storms: thousands of `SIGUSR1` and of a real-time signal, sent
//! from several threads at once, received through tally's
//! [`ProcessSignals`] as counted packets.
//!
//! * Real-time signals queue, so their counts add up exactly to what was
//!   sent. The kernel bounds what may wait in the queues of one user
//!   (`RLIMIT_SIGPENDING`, shared with every process of that user), so the
//!   senders keep at most [`window`] signals unread: each takes a ticket and
//!   sends only once the receiver has counted all but `window` of those
//!   before it. A send that finds the queue full anyway (`EAGAIN`, another
//!   process of this user filling it) is retried, and only successful sends
//!   are counted.
//! * Standard signals coalesce in the kernel, so `SIGUSR1`'s count is at
//!   least one and at most what was sent; and none may be left behind: once
//!   the senders are done and the receiver has drained, no `SIGUSR1` is
//!   still pending, so the last one sent was counted (no lost final
//!   wake-up).
//!
//! Half the senders signal the process (`kill`, `sigqueue`), half the
//! receiving thread (`tgkill`); the signalfd, read on that thread, sees both.
//!
//! This file runs without the test harness (`harness = false`), as
//! `signals.rs` does: a signalfd only sees a signal that is blocked in every
//! thread, so `main` blocks the signals before any thread exists.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tally::signal::ProcessSignals;
use tally::{LocalReactor, PacketKind, PacketList};

/// Sending threads per signal.
const SENDERS: u32 = 4;
/// Signals each sender sends.
const PER_SENDER: u32 = 5_000;
/// How long a sender waits for the receiver before giving up.
const SENDER_LIMIT: Duration = Duration::from_secs(15);
/// How often the receiver is checked on for signals left pending.
const CHECK: Duration = Duration::from_millis(50);
/// How long a storm may last.
const STUCK: Duration = Duration::from_secs(15);

/// The real-time signal these tests use (`signals.rs` uses the first two).
fn rt_signal() -> i32 {
    libc::SIGRTMIN() + 2
}

/// The most real-time signals left unread at once: well below the queue
/// limit, which other processes of this user share.
fn window() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_SIGPENDING, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    (lim.rlim_cur / 8).clamp(1, 256)
}

/// The receiving thread's id, for `tgkill`.
fn gettid() -> libc::pid_t {
    // SAFETY: gettid(2) has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// How sender `n` sends: to the process, or to the receiving thread.
#[derive(Clone, Copy, Debug)]
enum Target {
    Process,
    Thread(libc::pid_t),
}

impl Target {
    /// Sender `n`'s target: even senders signal the process.
    fn of(n: u32, receiver: libc::pid_t) -> Target {
        if n.is_multiple_of(2) { Target::Process } else { Target::Thread(receiver) }
    }

    /// Sends `signo` once, retrying while the kernel's queue is full;
    /// returns how many retries that took.
    fn send(self, signo: i32, value: usize) -> u64 {
        let mut retries = 0;
        let start = Instant::now();
        loop {
            // SAFETY: our own pid (and, for tgkill, a thread of it) and a
            // valid signal number that every thread blocks; the value is
            // plain data.
            let rc = unsafe {
                match self {
                    Target::Process if signo == libc::SIGUSR1 => libc::kill(libc::getpid(), signo),
                    Target::Process => {
                        let value = libc::sigval { sival_ptr: value as *mut libc::c_void };
                        libc::sigqueue(libc::getpid(), signo, value)
                    }
                    Target::Thread(tid) => libc::tgkill(libc::getpid(), tid, signo),
                }
            };
            if rc == 0 {
                return retries;
            }
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "sending {signo} to {self:?}: {e}");
            assert!(start.elapsed() < SENDER_LIMIT, "the signal queue stayed full");
            retries += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Credit for real-time senders: tickets taken, and signals counted.
#[derive(Default)]
struct Window {
    tickets: AtomicU64,
    received: AtomicU64,
}

impl Window {
    /// Waits until this sender may send one more, holding at most `window`
    /// unread; `false` if the receiver stopped counting.
    fn acquire(&self, window: u64) -> bool {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        while ticket >= self.received.load(Ordering::SeqCst) + window {
            if start.elapsed() > SENDER_LIMIT {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        true
    }
}

/// What the senders did.
#[derive(Default)]
struct Sent {
    usr1: AtomicU64,
    rt: AtomicU64,
    retries: AtomicU64,
    /// Senders that have sent their last signal.
    finished: AtomicU32,
    /// Set if a sender gave up waiting for the receiver.
    stuck: AtomicBool,
}

/// Starts [`SENDERS`] threads that each send [`PER_SENDER`] of each signal in
/// `signos`, interleaved, real-time ones within `window`.
fn start_senders(
    signos: &'static [fn() -> i32],
    receiver: libc::pid_t,
    credit: Arc<Window>,
    sent: Arc<Sent>,
) -> Vec<JoinHandle<()>> {
    let window = window();
    (0..SENDERS)
        .map(|n| {
            let (credit, sent) = (credit.clone(), sent.clone());
            std::thread::spawn(move || {
                let target = Target::of(n, receiver);
                'sending: for i in 0..PER_SENDER {
                    for signo in signos.iter().map(|f| f()) {
                        if signo == libc::SIGUSR1 {
                            sent.retries.fetch_add(target.send(signo, 0), Ordering::SeqCst);
                            sent.usr1.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                        if !credit.acquire(window) {
                            sent.stuck.store(true, Ordering::SeqCst);
                            break 'sending;
                        }
                        let value = (n * PER_SENDER + i) as usize;
                        sent.retries.fetch_add(target.send(signo, value), Ordering::SeqCst);
                        sent.rt.fetch_add(1, Ordering::SeqCst);
                    }
                }
                sent.finished.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect()
}

/// Counts of the signals received.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    usr1: u64,
    rt: u64,
    packets: u64,
    receives: u64,
}

impl Counts {
    /// Adds one received list, checking each packet.
    fn add(&mut self, list: &PacketList) {
        self.receives += 1;
        for p in list {
            let PacketKind::ProcessSignal(s) = p.kind() else {
                panic!("not a signal packet: {p:?}")
            };
            assert!(s.count.get() > 0, "a signal packet with a zero count");
            let n = u64::from(s.count.get());
            match s.signo {
                libc::SIGUSR1 => self.usr1 += n,
                signo if signo == rt_signal() => self.rt += n,
                signo => panic!("unexpected signal {signo}"),
            }
            self.packets += 1;
        }
    }
}

/// Receives on `sigs` until every sender has finished and nothing is left
/// pending, publishing the real-time count to `credit`; returns the counts.
///
/// The receiver is a task of its own, polled only when its own waker fires
/// (`recv` reads the signalfd at every poll, so a `recv` polled by anything
/// else, such as a `timeout` around it, would hide a lost wake-up). This
/// task checks on it every [`CHECK`]: a signal pending at two checks in a
/// row, with no receive between them, is a lost wake-up: it had a whole
/// `CHECK` to wake the receiver. The signal that a sender sends last must
/// wake it too: the storm ends only when nothing is pending.
async fn receive_storm(
    mut sigs: ProcessSignals,
    signos: &[i32],
    credit: Arc<Window>,
    sent: &Sent,
) -> Counts {
    let counts = Rc::new(Cell::new(Counts::default()));
    let receiver = tally::spawn({
        let counts = counts.clone();
        async move {
            loop {
                let list = sigs.recv().await.expect("read the signalfd");
                let mut c = counts.get();
                c.add(&list);
                counts.set(c);
                credit.received.store(c.rt, Ordering::SeqCst);
            }
        }
    });
    let start = Instant::now();
    let mut suspects = Vec::<i32>::new();
    let mut receives = 0;
    loop {
        tally::time::sleep(CHECK).await;
        if receiver.is_finished() {
            receiver.await.expect("the receiver task");
            unreachable!("the receiver task returned");
        }
        // Senders first: once none is left, anything sent is pending or
        // counted.
        let finished = sent.finished.load(Ordering::SeqCst) == SENDERS;
        let mut pending_now: Vec<i32> = signos.iter().copied().filter(|&s| pending(s)).collect();
        if !pending_now.is_empty() && counts.get().receives == receives {
            // Let a receiver woken in this same turn run before judging.
            for _ in 0..3 {
                util::yield_now().await;
            }
            pending_now.retain(|&s| pending(s));
        }
        let now = counts.get().receives;
        if now == receives {
            let lost: Vec<i32> =
                pending_now.iter().copied().filter(|s| suspects.contains(s)).collect();
            assert!(
                lost.is_empty(),
                "{lost:?} pending for {CHECK:?} and more, no receive: a lost wake-up ({:?})",
                counts.get()
            );
        }
        if finished && pending_now.is_empty() {
            receiver.abort();
            return counts.get();
        }
        assert!(start.elapsed() < STUCK, "the storm still ran after {STUCK:?}: {:?}", counts.get());
        (suspects, receives) = (pending_now, now);
    }
}

/// Whether `signo` is pending for this thread or the process.
fn pending(signo: i32) -> bool {
    // SAFETY: sigset_t is plain data; sigpending fills it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    assert_eq!(unsafe { libc::sigpending(&mut set) }, 0, "sigpending");
    // SAFETY: `set` is a valid sigset_t; `signo` is a signal number.
    unsafe { libc::sigismember(&set, signo) == 1 }
}

/// Runs a storm of `signos` and returns what was sent and received.
fn storm(what: &str, signos: &'static [fn() -> i32]) -> (Arc<Sent>, Counts, Duration) {
    let rt = LocalReactor::new().unwrap();
    let all: Vec<i32> = signos.iter().map(|f| f()).collect();
    let (credit, sent) = (Arc::new(Window::default()), Arc::new(Sent::default()));
    let start = Instant::now();
    let counts = util::bounded(&rt, what, async {
        let sigs = tally::signal::signals(&all).unwrap();
        let senders = start_senders(signos, gettid(), credit.clone(), sent.clone());
        let counts = receive_storm(sigs, &all, credit.clone(), &sent).await;
        for s in senders {
            s.join().expect("a sender thread");
        }
        counts
    });
    let elapsed = start.elapsed();
    assert!(!sent.stuck.load(Ordering::SeqCst), "{what}: a sender waited for the receiver");
    for &signo in &all {
        assert!(!pending(signo), "{what}: signal {signo} still pending after the drain");
    }
    (sent, counts, elapsed)
}

fn usr1() -> i32 {
    libc::SIGUSR1
}

fn realtime_storm_counts_add_up_exactly() {
    let (sent, counts, elapsed) = storm("real-time storm", &[rt_signal]);
    let sent_rt = sent.rt.load(Ordering::SeqCst);
    assert_eq!(sent_rt, u64::from(SENDERS * PER_SENDER));
    assert_eq!(counts.rt, sent_rt, "real-time signals lost or duplicated");
    println!(
        "  {} real-time signals from {SENDERS} threads, window {}: {} counted in {} packets \
         over {} receives, {} EAGAIN retries, {elapsed:?}",
        sent_rt,
        window(),
        counts.rt,
        counts.packets,
        counts.receives,
        sent.retries.load(Ordering::SeqCst),
    );
}

fn sigusr1_storm_coalesces_and_the_last_is_counted() {
    let (sent, counts, elapsed) = storm("SIGUSR1 storm", &[usr1]);
    let sent_usr1 = sent.usr1.load(Ordering::SeqCst);
    assert_eq!(sent_usr1, u64::from(SENDERS * PER_SENDER));
    assert!(counts.usr1 >= 1, "no SIGUSR1 counted of {sent_usr1}");
    assert!(counts.usr1 <= sent_usr1, "{} SIGUSR1 counted, {sent_usr1} sent", counts.usr1);
    println!(
        "  {sent_usr1} SIGUSR1 from {SENDERS} threads: {} counted (coalesced in the kernel) in \
         {} receives, none left pending, {elapsed:?}",
        counts.usr1, counts.receives,
    );
}

fn mixed_storm_keeps_the_counts_apart() {
    let (sent, counts, elapsed) = storm("mixed storm", &[usr1, rt_signal]);
    let (sent_usr1, sent_rt) = (sent.usr1.load(Ordering::SeqCst), sent.rt.load(Ordering::SeqCst));
    assert_eq!(counts.rt, sent_rt, "real-time signals lost or duplicated beside SIGUSR1");
    assert!((1..=sent_usr1).contains(&counts.usr1), "{} SIGUSR1 of {sent_usr1}", counts.usr1);
    println!(
        "  {sent_usr1} SIGUSR1 and {sent_rt} real-time, interleaved: {} and {} counted in {} \
         packets, {elapsed:?}",
        counts.usr1, counts.rt, counts.packets,
    );
}

fn main() {
    // First, before any thread exists.
    tally::signal::block(&[libc::SIGUSR1, rt_signal()]).unwrap();
    let tests: [(&str, fn()); 3] = [
        ("realtime_storm_counts_add_up_exactly", realtime_storm_counts_add_up_exactly),
        (
            "sigusr1_storm_coalesces_and_the_last_is_counted",
            sigusr1_storm_coalesces_and_the_last_is_counted,
        ),
        ("mixed_storm_keeps_the_counts_apart", mixed_storm_keeps_the_counts_apart),
    ];
    // Answer the harness's common flags: NAME filters, `--list` lists, and
    // `--ignored` runs nothing (none of these tests is ignored).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    if args.iter().any(|a| a == "--ignored") {
        println!("signal_storm: 0 passed (none is ignored)");
        return;
    }
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        println!("test {name} ...");
        test();
        println!("test {name} ... ok");
        ran += 1;
    }
    println!("\nsignal_storm: {ran} passed ({SENDERS} senders x {PER_SENDER} per signal)");
}
