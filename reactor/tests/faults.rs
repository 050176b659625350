//! Real faults on real fds, on whichever backend the suite runs on (CI runs
//! it twice: io_uring by default, then `TALLY_BACKEND=epoll`). Nothing here
//! mocks the kernel.
//!
//! * **SQ full:** a reactor with the smallest queues the [`Builder`] allows
//!   (one SQ entry, a queue cap of one) takes hundreds of recvs, timeouts
//!   and nops before its first turn. Every submit succeeds (a full SQ is
//!   flushed or backlogged, never refused), every op completes or is
//!   cancelled, and no byte is lost.
//! * **fd-number reuse:** an op's owner is dropped (or the op cancelled),
//!   its fd closed and the number handed to a new file before the next
//!   turn; nothing reaches the new file (no byte read from it, no
//!   connection accepted from it) and no packet reaches the registration
//!   that takes the old one's slot or the new fd. Each case runs with the
//!   op already in the kernel (a turn after the submit) and again with the
//!   op still queued (no turn): a cancel submits what is queued before it
//!   returns, so a queued op binds to the file it was made for (before that
//!   fix, the queued accept and recv ran against the new file on io_uring).
//!   `Op::close` on the same reactor, the other way `Op`'s doc gives, is
//!   checked too.
//! * **Remote handles against a dying reactor:** four threads raise, send
//!   and wake while the reactor turns and is dropped; once the drop is
//!   done every call answers `BrokenPipe`, and every thread finishes.
//! * **A low `RLIMIT_MEMLOCK`:** in a child process without
//!   `CAP_IPC_LOCK`, with a limit of 0 and then 64 KiB, building a reactor
//!   (a large ring, a buffer group) either works or fails with a clear
//!   `io::Error`, and `Auto` falls back to epoll.
//! * **Peer reset:** a TCP peer that resets (`SO_LINGER {on, 0}`) under a
//!   recv and under a send in flight: the ops fail with the errno the
//!   kernel gives, no `SIGPIPE` is raised, and no fd leaks.
//!
//! Every test holds one lock for its whole run: the fd-reuse cases need the
//! lowest free fd numbers to themselves, and the leak checks count
//! `/proc/self/fd`.

mod util;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tally_reactor::{Backend, Builder, Cancel, Op, OpId, Packet, Reactor, Registration, Signals};
use util::{Deadline, TICK, completion_of, completions, open_fds, signal_totals, turn_until};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Serialises the tests of this binary (see the module doc).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the others still run.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `t` moved to fd number `number`, which the caller just closed: the
/// kernel hands out the lowest free number, which is usually `number`
/// already; otherwise `F_DUPFD` puts a copy there. Panics if the number
/// is not free (something else took it).
fn place_at<T: From<OwnedFd> + Into<OwnedFd>>(t: T, number: RawFd) -> T {
    let fd: OwnedFd = t.into();
    if fd.as_raw_fd() == number {
        return T::from(fd);
    }
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes no pointers.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, number) };
    assert!(dup >= 0, "F_DUPFD: {}", std::io::Error::last_os_error());
    // SAFETY: fcntl just returned this fd; nothing else owns it.
    let dup = unsafe { OwnedFd::from_raw_fd(dup) };
    assert_eq!(dup.as_raw_fd(), number, "fd {number} was taken by someone else");
    T::from(dup)
}

/// Everything readable from `s` right now, without waiting.
fn read_now(s: &mut UnixStream) -> Vec<u8> {
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    got
}

/// Sends `bytes` on `fd` without blocking or raising `SIGPIPE`, ignoring
/// the outcome: for a write whose fate depends on the backend (an fd
/// whose file may or may not still be alive in the kernel).
fn send_and_ignore(fd: RawFd, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for reads of its length.
    let _ = unsafe {
        libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    };
}

/// Sets an `int` socket option.
fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) {
    // SAFETY: `value` is a valid c_int for the call, of the length given.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "setsockopt({level}, {name}): {}", std::io::Error::last_os_error());
}

/// Makes closing `s` send a RST instead of a FIN: `SO_LINGER {on, 0}`.
fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `linger` is a valid struct linger for the call.
    let ret = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// A connected loopback TCP pair, (client, server), from `listener`.
fn tcp_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Turns until the kernel holds exactly `live` operations, then a few
/// times more, so that anything still on its way has arrived.
#[track_caller]
fn settle(reactor: &Reactor, live: usize) {
    turn_until(reactor, "the cancelled ops' final completions", || {
        reactor.metrics().ops_in_flight == live
    });
    for _ in 0..3 {
        reactor.turn(Some(TICK)).unwrap();
    }
}

/// The name of errno `e`, for messages.
fn errname(e: i32) -> String {
    match e {
        libc::ECONNRESET => "ECONNRESET".into(),
        libc::EPIPE => "EPIPE".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EPERM => "EPERM".into(),
        libc::ECANCELED => "ECANCELED".into(),
        _ => format!("errno {e}"),
    }
}

/// Counts `SIGPIPE`s while alive, in place of the default disposition
/// (which Rust sets to "ignore", hiding one): restored on drop.
struct SigpipeCounter {
    old: libc::sigaction,
}

static SIGPIPES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_sigpipe(_: libc::c_int) {
    SIGPIPES.fetch_add(1, Ordering::SeqCst);
}

impl SigpipeCounter {
    fn install() -> SigpipeCounter {
        SIGPIPES.store(0, Ordering::SeqCst);
        // SAFETY: sigaction is plain old data; all-zero is a valid value.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = count_sigpipe as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: as above.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both structs are valid for the call; the handler only
        // touches an atomic, which is async-signal-safe.
        let ret = unsafe {
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(libc::SIGPIPE, &new, &mut old)
        };
        assert_eq!(ret, 0, "sigaction: {}", std::io::Error::last_os_error());
        SigpipeCounter { old }
    }

    fn count(&self) -> usize {
        SIGPIPES.load(Ordering::SeqCst)
    }
}

impl Drop for SigpipeCounter {
    fn drop(&mut self) {
        // SAFETY: `old` is the action sigaction handed back in `install`.
        unsafe { libc::sigaction(libc::SIGPIPE, &self.old, std::ptr::null_mut()) };
    }
}

// ---------------------------------------------------------------------------
// 1. SQ full
// ---------------------------------------------------------------------------

/// One SQ entry (a CQ of two) and a queue cap of one, the least the
/// Builder allows (`entries(0)` and `queue_cap(0)` round up to 1), take
/// 200 recvs, 300 timeouts and 100 nops before the first turn.
///
/// What the API documents for a full queue, asserted exactly:
/// `Registration::submit` fails only for an unknown buffer group (here
/// too: `InvalidInput`), so every other submit succeeds; a full SQ costs
/// kernel entries to flush it (`Metrics::enters`) before any turn; and
/// one-shot completions past the queue cap are kept
/// (`Metrics::queue_overflows`), never dropped. Then: every recv that was
/// not cancelled gets exactly its pair's bytes, every timeout fires with
/// `ETIME` or is cancelled, no op delivers twice or after its cancel, and
/// the cancelled recvs took no byte from their sockets.
#[test]
fn sq_full_every_submit_is_accepted_and_every_op_completes_or_is_cancelled() {
    const PAIRS: usize = 200;
    const SHORT: usize = 150;
    const LONG: usize = 150;
    const NOPS: usize = 100;
    let _serial = serial();
    let reactor = Builder::new().entries(0).queue_cap(0).build().unwrap();
    let backend = reactor.metrics().backend;
    let recvs = reactor.register();
    let others = reactor.register();
    let mut pairs: Vec<(UnixStream, UnixStream)> =
        (0..PAIRS).map(|_| UnixStream::pair().unwrap()).collect();
    let before = reactor.metrics();

    let mut recv_ops = Vec::with_capacity(PAIRS);
    let (mut short_ops, mut long_ops, mut nop_ops) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (rx, _)) in pairs.iter().enumerate() {
        let op = Op::recv(rx.as_raw_fd(), Vec::with_capacity(64), 0);
        recv_ops.push(recvs.submit(op).expect("a recv refused by a full SQ"));
        if i < SHORT {
            let after = Duration::from_millis(1 + (i % 20) as u64);
            short_ops.push(others.submit(Op::timeout(after)).expect("a timeout refused"));
        }
        if i < LONG {
            let after = Duration::from_secs(3600);
            long_ops.push(others.submit(Op::timeout(after)).expect("a timeout refused"));
        }
        if i < NOPS {
            nop_ops.push(others.submit(Op::nop()).expect("a nop refused"));
        }
    }
    // The one documented refusal still comes, and clearly, on a full SQ:
    // a buffer group this reactor does not have.
    let elsewhere = Reactor::new().unwrap();
    if elsewhere.features().buf_ring {
        let foreign = elsewhere.buf_ring(2, 64).unwrap();
        let err = recvs
            .submit(Op::recv_multi(pairs[0].0.as_raw_fd(), foreign))
            .expect_err("a buffer group of another reactor");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    drop(elsewhere);
    let queued = reactor.metrics();
    assert_eq!(queued.turns, before.turns, "no turn yet");
    assert_eq!(
        queued.submissions - before.submissions,
        (PAIRS + SHORT + LONG + NOPS) as u64,
        "{queued:?}"
    );
    if backend == Backend::IoUring {
        // 600 SQEs through one slot: the full SQ was handed to the kernel
        // before any turn, as `Metrics::enters` documents.
        assert!(queued.enters > before.enters, "the full SQ was never flushed: {queued:?}");
    }

    // Half the recvs (the even ones) and every long timeout are cancelled
    // while many of them still wait in the SQ or its backlog.
    for &op in recv_ops.iter().step_by(2) {
        let answer = recvs.cancel(op);
        assert!(matches!(answer, Cancel::Cancelled(ref p) if p.is_empty()), "{answer:?}");
    }
    for &op in &long_ops {
        let answer = others.cancel(op);
        assert!(matches!(answer, Cancel::Cancelled(ref p) if p.is_empty()), "{answer:?}");
    }

    // Phase 1: the nops and short timeouts come back, the cancelled ops
    // settle, and only the odd recvs stay in the kernel.
    let mut seen = HashMap::<OpId, i32>::new();
    let live_recvs = PAIRS / 2;
    turn_until(&reactor, "nops, short timeouts and cancels", || {
        record(&mut seen, &recvs.try_drain());
        record(&mut seen, &others.try_drain());
        seen.len() == SHORT + NOPS && reactor.metrics().ops_in_flight == live_recvs
    });
    for &op in &nop_ops {
        assert_eq!(seen.get(&op), Some(&0), "nop {op:?}");
    }
    for &op in &short_ops {
        assert_eq!(seen.get(&op), Some(&-libc::ETIME), "timeout {op:?}");
    }
    let m = reactor.metrics();
    assert!(m.queue_overflows > 0, "a queue cap of one never overflowed: {m:?}");

    // Phase 2: every pair gets its bytes; only the live recvs take them.
    for (i, (_, tx)) in pairs.iter_mut().enumerate() {
        tx.write_all(format!("pair {i}").as_bytes()).unwrap();
    }
    turn_until(&reactor, "the live recvs", || {
        record(&mut seen, &recvs.try_drain());
        record(&mut seen, &others.try_drain());
        seen.len() == SHORT + NOPS + live_recvs
    });
    for (i, &op) in recv_ops.iter().enumerate() {
        let expected = format!("pair {i}");
        if i % 2 == 1 {
            assert_eq!(seen.get(&op), Some(&(expected.len() as i32)), "recv {i}");
            let buf = recvs.reclaim(op).expect("a finished recv's buffer");
            assert_eq!(buf, expected.as_bytes(), "recv {i} got someone else's bytes");
        } else {
            assert!(!seen.contains_key(&op), "cancelled recv {i} was delivered");
            assert!(recvs.reclaim(op).is_none());
            let got = read_now(&mut pairs[i].0);
            assert_eq!(got, expected.as_bytes(), "cancelled recv {i} took bytes");
        }
    }
    for &op in &long_ops {
        assert!(!seen.contains_key(&op), "cancelled timeout {op:?} was delivered");
    }
    for _ in 0..3 {
        reactor.turn(Some(TICK)).unwrap();
        assert!(recvs.try_drain().is_empty() && others.try_drain().is_empty());
    }
    let m = reactor.metrics();
    assert_eq!(m.ops_in_flight, 0, "{m:?}");
    println!("sq full ({backend}): {m:?}");
}

/// Notes each completion among `packets` in `seen`, by op, panicking on
/// a second one for the same op.
fn record(seen: &mut HashMap<OpId, i32>, packets: &[Packet]) {
    for c in completions(packets) {
        assert!(seen.insert(c.op(), c.result).is_none(), "{:?} delivered twice", c.op());
    }
}

// ---------------------------------------------------------------------------
// 2. fd-number reuse
// ---------------------------------------------------------------------------

/// When the op's fd is closed, relative to the op reaching the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timing {
    /// The op was submitted and a turn has handed it to the kernel: the
    /// contract `Op`'s module doc states (the fd stays open until the
    /// kernel has the op; the close and reuse race only the cancel).
    InFlight,
    /// Submitted but never turned: the SQE still waits in the SQ (on
    /// io_uring) when its fd is closed and the number reused.
    Queued,
}

/// A multishot accept on a listener; its registration is dropped, the
/// listener closed, and a new listener bound at the same fd number with a
/// connection waiting. The connection must still be in the new listener's
/// backlog afterwards, and the registration that takes the old slot gets
/// nothing.
fn multishot_accept_then_reuse(timing: Timing) {
    let _serial = serial();
    let reactor = Reactor::new().unwrap();
    require!(reactor, multishot_accept);
    let (old_listener, old_addr) = util::loopback_listener();
    let number = old_listener.as_raw_fd();
    let old = reactor.register();
    let op = old.submit(Op::accept_multi(number)).unwrap();
    if timing == Timing::InFlight {
        // Live: one connection goes through it first.
        let first = TcpStream::connect(old_addr).unwrap();
        let (_, fds) = util::gather_accepts(&reactor, &old, "the first accept", |p| {
            completion_of(p, op).is_some()
        });
        assert_eq!(fds.len(), 1, "one connection, one fd");
        drop((first, fds));
    }
    let old_token = old.token();
    let before = reactor.metrics();

    drop(old);
    drop(old_listener);
    let new_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let natural = new_listener.as_raw_fd() == number;
    let new_listener = place_at(new_listener, number);
    assert_eq!(new_listener.as_raw_fd(), number);
    let mut client = TcpStream::connect(new_listener.local_addr().unwrap()).unwrap();
    let newcomer = reactor.register();
    assert_eq!(newcomer.token().slot(), old_token.slot(), "the newcomer takes the old slot");
    assert_ne!(newcomer.token(), old_token);

    settle(&reactor, 0);
    let got = newcomer.try_drain();
    assert!(got.is_empty(), "the old accept's packets reached the newcomer: {got:?}");
    let m = reactor.metrics();
    assert!(
        m.reclaimed + m.stale_completions > before.reclaimed + before.stale_completions,
        "the old accept's final completion was neither reclaimed nor dropped: {m:?}"
    );
    // Nothing accepted from the new listener: its connection waits.
    new_listener.set_nonblocking(true).unwrap();
    let (mut server, _) = new_listener
        .accept()
        .unwrap_or_else(|e| panic!("the new listener's connection was taken ({e}); {m:?}"));
    server.write_all(b"n").unwrap();
    let mut byte = [0u8; 1];
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.read_exact(&mut byte).expect("the waiting connection is whole");
    assert_eq!(&byte, b"n");
    assert_eq!(new_listener.accept().map(|_| ()).unwrap_err().kind(), ErrorKind::WouldBlock);
    println!("accept reuse ({timing:?}, number {number}, natural reuse {natural}): {m:?}");
}

/// A `register_fd` readiness watch; dropped, its socket closed, a new
/// socket at the same number, and the old socket's peer writes (an edge
/// for the old file, if the kernel still holds it). A new `register_fd` of
/// the number succeeds, takes the old slot, and reports the new file's
/// readiness only: nothing until its own peer writes.
fn register_fd_then_reuse(timing: Timing) {
    let _serial = serial();
    let reactor = Reactor::new().unwrap();
    let (mut old_fd, mut old_peer) = UnixStream::pair().unwrap();
    let number = old_fd.as_raw_fd();
    let old = reactor.register_fd(number, Signals::READABLE).unwrap();
    if timing == Timing::InFlight {
        old_peer.write_all(b"o").unwrap();
        let got = util::gather_until(&reactor, &old, "the old fd's edge", |p| {
            signal_totals(p).0.contains(Signals::READABLE)
        });
        assert!(completions(&got).is_empty(), "{got:?}");
        assert_eq!(read_now(&mut old_fd), b"o");
    }
    let old_token = old.token();
    let before = reactor.metrics();

    drop(old);
    drop(old_fd);
    let (new_fd, mut new_peer) = UnixStream::pair().unwrap();
    let natural = new_fd.as_raw_fd() == number;
    let mut new_fd = place_at(new_fd, number);
    send_and_ignore(old_peer.as_raw_fd(), b"old file's edge");
    let newcomer = reactor
        .register_fd(number, Signals::READABLE)
        .expect("the number is free to register again");
    assert_eq!(newcomer.token().slot(), old_token.slot(), "the newcomer takes the old slot");
    assert_ne!(newcomer.token(), old_token);

    settle(&reactor, 1);
    let got = newcomer.try_drain();
    assert!(got.is_empty(), "the new fd is not readable, yet: {got:?}");
    let m = reactor.metrics();
    assert!(
        m.reclaimed + m.stale_completions > before.reclaimed + before.stale_completions,
        "the old poll's final completion was neither reclaimed nor dropped: {m:?}"
    );
    assert!(read_now(&mut new_peer).is_empty(), "someone wrote to the new file's peer");

    // The newcomer watches the new file.
    new_peer.write_all(b"new").unwrap();
    let got = util::gather_until(&reactor, &newcomer, "the new fd's edge", |p| {
        signal_totals(p).0.contains(Signals::READABLE)
    });
    assert!(completions(&got).is_empty(), "{got:?}");
    assert!(got.iter().all(|p| p.key() == newcomer.token()));
    assert_eq!(read_now(&mut new_fd), b"new", "the new file's bytes were touched");
    println!("register_fd reuse ({timing:?}, number {number}, natural reuse {natural}): {m:?}");
}

/// A recv on a socket; cancelled, the socket closed, a new socket at the
/// same number whose peer writes at once, and the old socket's peer
/// writes too. The cancelled recv delivers nothing and takes none of the
/// new file's bytes.
fn cancelled_recv_then_reuse(timing: Timing) {
    let _serial = serial();
    let reactor = Reactor::new().unwrap();
    let (old_fd, mut old_peer) = UnixStream::pair().unwrap();
    let number = old_fd.as_raw_fd();
    let reg = reactor.register();
    let op = reg.submit(Op::recv(number, Vec::with_capacity(64), 0)).unwrap();
    if timing == Timing::InFlight {
        for _ in 0..3 {
            reactor.turn(Some(Duration::from_millis(1))).unwrap();
        }
        assert!(reg.try_drain().is_empty(), "nothing to receive yet");
        assert_eq!(reactor.metrics().ops_in_flight, 1);
    }
    let answer = reg.cancel(op);
    assert!(matches!(answer, Cancel::Cancelled(ref p) if p.is_empty()), "{answer:?}");

    drop(old_fd);
    let (new_fd, mut new_peer) = UnixStream::pair().unwrap();
    let natural = new_fd.as_raw_fd() == number;
    let mut new_fd = place_at(new_fd, number);
    new_peer.write_all(b"for the new file only").unwrap();
    let _ = old_peer.write(b"old");

    settle(&reactor, 0);
    let got = reg.try_drain();
    assert!(got.is_empty(), "a cancelled recv delivered: {got:?}");
    assert!(reg.reclaim(op).is_none());
    assert!(matches!(reg.cancel(op), Cancel::NotFound));
    let m = reactor.metrics();
    assert_eq!(
        read_now(&mut new_fd),
        b"for the new file only",
        "the cancelled recv read the new file; {m:?}"
    );
    assert!(read_now(&mut new_peer).is_empty(), "someone wrote to the new file's peer");
    println!("recv reuse ({timing:?}, number {number}, natural reuse {natural}): {m:?}");
}

#[test]
fn fd_reuse_after_a_multishot_accept_in_flight() {
    multishot_accept_then_reuse(Timing::InFlight);
}

#[test]
fn fd_reuse_after_a_register_fd_watch_in_flight() {
    register_fd_then_reuse(Timing::InFlight);
}

#[test]
fn fd_reuse_after_cancelling_a_recv_in_flight() {
    cancelled_recv_then_reuse(Timing::InFlight);
}

#[test]
fn fd_reuse_after_a_register_fd_watch_still_queued() {
    register_fd_then_reuse(Timing::Queued);
}

/// The accept's SQE is still queued when its registration is dropped;
/// the drop's cancel submits it first, so it binds to the old listener
/// and never takes the new one's connection.
#[test]
fn fd_reuse_after_a_multishot_accept_still_queued() {
    multishot_accept_then_reuse(Timing::Queued);
}

/// The recv's SQE is still queued when it is cancelled; the cancel
/// submits it first, so it binds to the old socket and never reads the
/// new one's bytes.
#[test]
fn fd_reuse_after_cancelling_a_recv_still_queued() {
    cancelled_recv_then_reuse(Timing::Queued);
}

/// The documented way to close an fd that a queued op names: cancel, then
/// `Op::close` on the same reactor, which runs after every SQE already
/// queued for it. Once the close completes, the number is free; the new
/// file there is never touched.
#[test]
fn fd_reuse_after_a_queued_recv_closed_with_op_close() {
    let _serial = serial();
    let reactor = Reactor::new().unwrap();
    let (old_fd, _old_peer) = UnixStream::pair().unwrap();
    let number = old_fd.as_raw_fd();
    let reg = reactor.register();
    let op = reg.submit(Op::recv(number, Vec::with_capacity(64), 0)).unwrap();
    let answer = reg.cancel(op);
    assert!(matches!(answer, Cancel::Cancelled(ref p) if p.is_empty()), "{answer:?}");
    let close = reg.submit(Op::close(OwnedFd::from(old_fd))).unwrap();
    let (c, all) = util::wait_completion(&reactor, &reg, close);
    assert_eq!(c.result, 0, "close: {}", util::errno(c.result));
    assert!(completion_of(&all, op).is_none(), "the cancelled recv delivered: {all:?}");

    let (new_fd, mut new_peer) = UnixStream::pair().unwrap();
    let mut new_fd = place_at(new_fd, number);
    new_peer.write_all(b"untouched").unwrap();
    settle(&reactor, 0);
    assert!(reg.try_drain().is_empty());
    assert_eq!(read_now(&mut new_fd), b"untouched");
}

// ---------------------------------------------------------------------------
// 3. Remote handles against a dying reactor
// ---------------------------------------------------------------------------

/// What one flooding thread saw.
#[derive(Debug, Default)]
struct Flood {
    ok: u64,
    would_block: u64,
    broken_pipe: u64,
    /// Calls made after the drop was done.
    after_drop: u64,
    /// Calls that succeeded (or said anything but `BrokenPipe`) after the
    /// drop was done: must stay 0.
    wrong_after_drop: Vec<String>,
    /// Errors other than `WouldBlock` (from a full user queue) and
    /// `BrokenPipe`: must stay empty.
    unexpected: Vec<String>,
    /// Whether the thread gave up on time before it saw the drop.
    timed_out: bool,
}

impl Flood {
    /// Counts the outcome of one call; `gone` says whether the drop was
    /// done before the call began.
    fn note(&mut self, gone: bool, what: &str, r: std::io::Result<()>) {
        match r {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => self.broken_pipe += 1,
            _ if gone => self.wrong_after_drop.push(format!("{what}: {r:?}")),
            Ok(()) => self.ok += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => self.would_block += 1,
            Err(e) => self.unexpected.push(format!("{what}: {e}")),
        }
    }
}

/// Four threads raise, send and wake in a loop while the main thread turns
/// a few times and drops the reactor and its registrations (in either
/// order), five rounds. Nothing crashes; once the drop is done every call
/// answers `BrokenPipe`; every thread finishes.
#[test]
fn remote_flood_from_four_threads_while_the_reactor_is_dropped() {
    const ROUNDS: usize = 5;
    const THREADS: usize = 4;
    /// Calls per thread per round, at most (before the drop).
    const MAX_CALLS: u64 = 20_000_000;
    /// Calls per thread once the drop is done.
    const CALLS_AFTER_DROP: u64 = 2_000;
    const THREAD_TIME: Duration = Duration::from_secs(10);
    let _serial = serial();
    let before = open_fds();
    for round in 0..ROUNDS {
        let reactor = Builder::new().user_cap(64).build().unwrap();
        let regs: Vec<Registration> = (0..2).map(|_| reactor.register()).collect();
        let dropped = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(THREADS + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let reg = &regs[t % regs.len()];
                let (signaler, sender) = (reg.signaler(), reg.sender());
                let waker = reactor.remote_waker();
                let (dropped, start) = (dropped.clone(), start.clone());
                thread::spawn(move || {
                    let mut seen = Flood::default();
                    start.wait();
                    let began = Instant::now();
                    let (mut after, mut timed_out) = (0, false);
                    for i in 0..MAX_CALLS {
                        // Read before the calls: if set, the drop was done
                        // before any of them began.
                        let gone = dropped.load(Ordering::Acquire);
                        let bits = Signals::user(t as u32);
                        seen.note(gone, "raise", signaler.raise(bits, 1).map(|_| ()));
                        seen.note(gone, "send", sender.send([t as u8; 32]));
                        if i % 16 == 0 {
                            seen.note(gone, "wake", waker.wake());
                        }
                        if gone {
                            after += 1;
                            if after == CALLS_AFTER_DROP {
                                break;
                            }
                        } else if i % 1024 == 0 && began.elapsed() > THREAD_TIME {
                            timed_out = true;
                            break;
                        }
                    }
                    seen.after_drop = after;
                    seen.timed_out = timed_out;
                    seen
                })
            })
            .collect();
        start.wait();
        for _ in 0..2 + round {
            reactor.turn(Some(TICK)).unwrap();
            for reg in &regs {
                drop(reg.try_drain());
            }
        }
        // Alternate which handle's drop tears the reactor down.
        if round % 2 == 0 {
            drop(regs);
            drop(reactor);
        } else {
            drop(reactor);
            drop(regs);
        }
        dropped.store(true, Ordering::Release);
        for (t, thread) in threads.into_iter().enumerate() {
            let seen = thread.join().expect("a flooding thread panicked");
            assert!(!seen.timed_out, "round {round}, thread {t} never saw the drop: {seen:?}");
            assert_eq!(seen.after_drop, CALLS_AFTER_DROP, "round {round}, thread {t}: {seen:?}");
            assert!(seen.wrong_after_drop.is_empty(), "round {round}, thread {t}: {seen:?}");
            assert!(seen.unexpected.is_empty(), "round {round}, thread {t}: {seen:?}");
            assert!(seen.broken_pipe >= 2 * CALLS_AFTER_DROP, "{seen:?}");
            if round == 0 {
                println!("flood round {round}, thread {t}: {seen:?}");
            }
        }
    }
    assert_eq!(open_fds(), before, "fds leaked across the rounds");
}

// ---------------------------------------------------------------------------
// 4. A low RLIMIT_MEMLOCK
// ---------------------------------------------------------------------------

/// Set in the child that `setup_under_a_low_memlock_limit` spawns.
const MEMLOCK_CHILD: &str = "TALLY_FAULTS_MEMLOCK_CHILD";

/// In a child process (this binary again, filtered to this test), with
/// `CAP_IPC_LOCK` dropped (it bypasses the limit, and tests often run as
/// root) and a soft `RLIMIT_MEMLOCK` of 0, then of 64 KiB: a default
/// reactor, one with 4096 SQ entries, a forced io_uring one with the
/// default entries and with 4096, and on each a buffer group of 1024 ×
/// 4 KiB. Auto must succeed (it falls back to epoll on `ENOMEM`, as
/// `Builder::build` documents); a forced ring and a buffer group either
/// work or fail with a clear `io::Error`, never a panic or an abort. The
/// child prints which. (On Linux 6.18, ring memory does count against
/// the limit: see the report lines.)
#[test]
fn setup_under_a_low_memlock_limit() {
    if std::env::var_os(MEMLOCK_CHILD).is_some() {
        memlock_child();
        return;
    }
    let _serial = serial();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["setup_under_a_low_memlock_limit", "--exact", "--nocapture"])
        .args(["--test-threads=1"])
        .env(MEMLOCK_CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Deadline::after(Duration::from_secs(60));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if deadline.passed() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the memlock child hung");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    for line in out.lines().filter(|l| l.starts_with("memlock")) {
        println!("{line}");
    }
    assert!(status.success(), "the memlock child failed ({status}):\n{out}\n{err}");
    assert!(out.contains("memlock: done"), "the child did not finish:\n{out}\n{err}");
}

/// Drops `CAP_IPC_LOCK` from this thread's effective and permitted sets.
/// Returns whether it was held.
fn drop_cap_ipc_lock() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 1 << 14;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: version 3 takes a header and two data structs, valid for
    // writes here.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    assert_eq!(ret, 0, "capget: {}", std::io::Error::last_os_error());
    let held = data[0].effective & CAP_IPC_LOCK != 0;
    data[0].effective &= !CAP_IPC_LOCK;
    data[0].permitted &= !CAP_IPC_LOCK;
    // SAFETY: as above, read-only.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    assert_eq!(ret, 0, "capset: {}", std::io::Error::last_os_error());
    held
}

fn memlock_child() {
    let had_cap = drop_cap_ipc_lock();
    // SAFETY: rlimit is plain old data; all-zero is a valid value.
    let mut hard: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `hard` is valid for writes.
    let ret = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut hard) };
    assert_eq!(ret, 0, "getrlimit: {}", std::io::Error::last_os_error());
    // The leading newline: the harness has printed the test's name on
    // this line already.
    println!(
        "\nmemlock: kernel {}, CAP_IPC_LOCK held before {had_cap} (now dropped)",
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    // The soft limit only: it may go back up, to the hard limit.
    for soft in [0, 64 << 10] {
        if soft > hard.rlim_max {
            println!("memlock: soft limit {soft} is above the hard limit; skipped");
            continue;
        }
        let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard.rlim_max };
        // SAFETY: `limit` is a valid rlimit for the call.
        let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
        assert_eq!(ret, 0, "setrlimit: {}", std::io::Error::last_os_error());
        if soft == 0 {
            // The limit bites: one locked page is refused.
            let page = vec![0u8; 4096];
            // SAFETY: mlock only pins the pages of a live allocation.
            let locked = unsafe { libc::mlock(page.as_ptr().cast(), page.len()) };
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            assert_ne!(locked, 0, "mlock succeeded: the limit is not in force");
            println!("memlock 0 KiB: mlock of one page: -{}", errname(e));
        }
        memlock_cases(soft >> 10);
    }
    println!("memlock: done");
}

/// Builds each reactor under the limit in force (`kib`, for the report).
fn memlock_cases(kib: u64) {
    let cases: [(&str, Builder, bool); 4] = [
        ("default", Builder::new(), true),
        ("entries 4096", Builder::new().entries(4096), true),
        ("forced io_uring", Builder::new().backend(Backend::IoUring), false),
        (
            "forced io_uring, entries 4096",
            Builder::new().backend(Backend::IoUring).entries(4096),
            false,
        ),
    ];
    for (name, builder, must_work) in cases {
        match builder.build() {
            Ok(reactor) => {
                let m = reactor.metrics();
                let fallback = m.fallback.map_or("none".to_string(), |f| f.to_string());
                // It works, not only builds.
                let reg = reactor.register();
                let op = reg.submit(Op::nop()).unwrap();
                let (c, _) = util::wait_completion(&reactor, &reg, op);
                assert_eq!(c.result, 0);
                let group = match reactor.buf_ring(1024, 4096) {
                    Ok(g) => format!("ok (group {})", g.id()),
                    Err(e) => {
                        assert!(
                            e.raw_os_error().is_some() || e.kind() != ErrorKind::Other,
                            "an unclear buf_ring error: {e:?}"
                        );
                        format!("error {:?}: {e}", e.kind())
                    }
                };
                println!(
                    "memlock {kib} KiB, {name}: ok on {}, fallback: {fallback}; \
                     buf_ring 1024 x 4 KiB: {group}",
                    m.backend
                );
            }
            Err(e) => {
                assert!(!must_work, "{name}: Auto must fall back, not fail: {e}");
                let text = e.to_string();
                assert!(text.contains("io_uring_setup"), "an unclear error: {text}");
                println!("memlock {kib} KiB, {name}: error {:?}: {text}", e.kind());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 5. Peer reset
// ---------------------------------------------------------------------------

/// A recv in flight on a TCP socket whose peer resets (`SO_LINGER {on,
/// 0}`, then close). The right answer is `ECONNRESET`: the kernel's
/// `tcp_reset` sets `sk_err`, which the waiting recv reports once; a recv
/// after it sees end of file (0), the receive side being shut. The
/// registration drops cleanly, and no fd leaks.
#[test]
fn peer_reset_under_a_recv_in_flight() {
    let _serial = serial();
    let before = open_fds();
    {
        let reactor = Reactor::new().unwrap();
        let (listener, _) = util::loopback_listener();
        let (ours, mut peer) = tcp_pair(&listener);
        let reg = reactor.register();

        // Mid-stream: some bytes arrive first.
        peer.write_all(b"hello").unwrap();
        let op = reg.submit(Op::recv(ours.as_raw_fd(), Vec::with_capacity(64), 0)).unwrap();
        let (c, _) = util::wait_completion(&reactor, &reg, op);
        assert_eq!(c.result, 5);
        assert_eq!(reg.reclaim(op).unwrap(), b"hello");

        let op = reg.submit(Op::recv(ours.as_raw_fd(), Vec::with_capacity(64), 0)).unwrap();
        for _ in 0..3 {
            reactor.turn(Some(Duration::from_millis(1))).unwrap();
        }
        assert!(completion_of(&reg.try_drain(), op).is_none(), "the recv is in flight");
        reset_on_close(&peer);
        drop(peer);
        let (c, _) = util::wait_completion(&reactor, &reg, op);
        println!("recv under a reset: {}", result_name(c.result));
        assert_eq!(c.result, -libc::ECONNRESET, "recv: {}", result_name(c.result));
        assert_eq!(reg.reclaim(op).unwrap(), b"", "an error fills nothing");

        let op = reg.submit(Op::recv(ours.as_raw_fd(), Vec::with_capacity(64), 0)).unwrap();
        let (c, _) = util::wait_completion(&reactor, &reg, op);
        println!("recv after the reset: {}", result_name(c.result));
        assert_eq!(c.result, 0, "the error is reported once, then end of file");

        drop(reg);
        let m = reactor.metrics();
        assert_eq!((m.registrations, m.ops_in_flight), (0, 0), "{m:?}");
        drop((ours, listener, reactor));
    }
    assert_eq!(open_fds(), before, "fds leaked");
}

/// A 1 MiB send in flight on a TCP socket whose send buffer (and the
/// peer's receive buffer) is full, when the peer resets. The send fails
/// with `ECONNRESET` or `EPIPE` (the first attempt after the reset sees
/// `sk_err`, ECONNRESET; any later one sees the shut send side, EPIPE),
/// and with `SIGPIPE` counted instead of ignored, none is raised
/// (`Op::send` adds `MSG_NOSIGNAL`). A second send says `EPIPE`, still
/// without a signal. The registration drops cleanly, and no fd leaks.
#[test]
fn peer_reset_under_a_send_in_flight() {
    const CHUNK: usize = 1 << 20;
    let _serial = serial();
    let sigpipes = SigpipeCounter::install();
    let before = open_fds();
    {
        let reactor = Reactor::new().unwrap();
        let (listener, _) = util::loopback_listener();
        // Small buffers, so that filling them is quick; accepted sockets
        // inherit the listener's receive buffer.
        set_int_opt(listener.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 16 * 1024);
        let (mut ours, peer) = tcp_pair(&listener);
        set_int_opt(ours.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 16 * 1024);
        let reg = reactor.register();

        // Fill both buffers, then leave a send in flight that cannot move.
        ours.set_nonblocking(true).unwrap();
        let deadline = Deadline::new();
        let mut filled = 0usize;
        let block = vec![0xA5u8; 64 * 1024];
        loop {
            deadline.check(&reactor, "the socket buffers to fill");
            match ours.write(&block) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling: {e}"),
            }
            assert!(filled < 256 << 20, "256 MiB went in and the buffers never filled");
        }
        let mut attempts = 0;
        let op = loop {
            attempts += 1;
            assert!(attempts <= 10, "every send completed: the buffers never stay full");
            let op = reg.submit(Op::send(ours.as_raw_fd(), vec![0x5Au8; CHUNK], 0)).unwrap();
            for _ in 0..3 {
                reactor.turn(Some(Duration::from_millis(5))).unwrap();
            }
            match completion_of(&reg.try_drain(), op) {
                None => break op,
                Some(c) => {
                    assert!(c.result > 0, "send before the reset: {}", result_name(c.result));
                    filled += c.result as usize;
                    drop(reg.reclaim(op));
                }
            }
        };
        assert_eq!(reactor.metrics().ops_in_flight, 1);

        reset_on_close(&peer);
        drop(peer);
        let (c, _) = util::wait_completion(&reactor, &reg, op);
        println!("send under a reset (after {filled} bytes buffered): {}", result_name(c.result));
        assert!(
            c.result == -libc::ECONNRESET || c.result == -libc::EPIPE,
            "send: {}",
            result_name(c.result)
        );
        assert_eq!(reg.reclaim(op).map(|b| b.len()), Some(CHUNK), "the buffer comes back whole");

        let op = reg.submit(Op::send(ours.as_raw_fd(), vec![1u8; 16], 0)).unwrap();
        let (c, _) = util::wait_completion(&reactor, &reg, op);
        println!("send after the reset: {}", result_name(c.result));
        assert_eq!(c.result, -libc::EPIPE, "send: {}", result_name(c.result));
        assert_eq!(sigpipes.count(), 0, "a send raised SIGPIPE");

        // An `Op::write` on the same socket is write(2), which has no
        // MSG_NOSIGNAL: what the kernel does then is reported, not
        // asserted (the process survives either way: the signal is
        // counted).
        let op = reg.submit(Op::write(ours.as_raw_fd(), vec![2u8; 16])).unwrap();
        let (c, _) = util::wait_completion(&reactor, &reg, op);
        println!(
            "write after the reset: {}, SIGPIPEs raised: {}",
            result_name(c.result),
            sigpipes.count()
        );
        assert!(c.result < 0, "a write on a reset socket succeeded");

        drop(reg);
        let m = reactor.metrics();
        assert_eq!((m.registrations, m.ops_in_flight), (0, 0), "{m:?}");
        let _ = ours.shutdown(Shutdown::Both);
        drop((ours, listener, reactor));
    }
    assert_eq!(open_fds(), before, "fds leaked");
}

/// A completion result as bytes or an errno name.
fn result_name(result: i32) -> String {
    if result >= 0 { format!("{result} bytes") } else { format!("-{}", errname(-result)) }
}
