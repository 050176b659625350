//! Fault tests at the executor level: each a real fault on real fds, on
//! loopback, with nothing mocked. CI runs them on both backends (io_uring by
//! default, and again with `TALLY_BACKEND=epoll`).
//!
//! * **EMFILE during accept** (in a child process, so that its lowered
//!   `RLIMIT_NOFILE` touches no other test): `accept` fails with `EMFILE`,
//!   at once and without consuming the pending connection; the listener stays
//!   usable, a server that backs off does not spin, and once its
//!   connections close it accepts and serves every client that waited, with
//!   no fd leaked.
//! * **A peer reset** in the middle of a write and of a read: the write
//!   fails (`ECONNRESET` or `EPIPE`) without raising `SIGPIPE`, the read
//!   ends (an error or EOF), neither hangs, and the runtime goes on serving
//!   its other connections.
//! * **A slow reader**: 100 MB written to a peer that stops reading for
//!   300 ms; the process's RSS stays bounded during the stall (back pressure
//!   reaches the writer) and every byte arrives, in order, once the peer
//!   reads again.
//!
//! The EMFILE and slow-reader tests each re-run this test binary as a child
//! process ([`run_child`]) filtered to themselves: the child alone lowers
//! its fd limit, and measures an RSS that the other tests, running in
//! parallel threads of the parent, do not touch.

mod util;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use tally::LocalReactor;
use tally::net::{TcpListener, TcpStream};
use util::bounded;

/// Set in the environment of a re-executed test binary: run the child half
/// of the named test.
const CHILD_ENV: &str = "TALLY_FAULTS_CHILD";

/// Closes `s` with `SO_LINGER` {on, 0}: the kernel sends RST instead of FIN
/// and discards whatever was queued either way.
fn reset(s: std::net::TcpStream) {
    util::linger_zero(s.as_raw_fd());
    drop(s);
}

/// The fds this process has open, as `/proc/self/fd` lists them, leaving
/// out the one that reads the listing.
fn open_fds() -> Vec<i32> {
    let own = format!("/proc/{}/fd", std::process::id());
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd") {
        let entry = entry.expect("read /proc/self/fd");
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        // The directory's own fd points at the listing; a gone fd raced us.
        match std::fs::read_link(entry.path()) {
            Ok(target) if target.as_os_str() != own.as_str() => fds.push(fd),
            _ => {}
        }
    }
    fds
}

/// This process's resident set, in bytes, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).expect("statm's rss").parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page as u64
}

/// User plus system CPU time this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: rusage is plain data, for which all zeroes is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn nofile_limit() -> libc::rlimit {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    lim
}

fn set_nofile_limit(lim: libc::rlimit) {
    // SAFETY: `lim` is a valid rlimit; the kernel checks its values.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// Runs the child half of `test` in a fresh copy of this test binary and
/// returns its output, failing if it fails or outlives `limit`.
fn run_child(test: &str, limit: Duration) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-exec the test binary");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child for {test} still ran after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "the child for {test} failed ({status}):\n{out}\n{err}");
    out
}

/// Prints the lines of a child's `out` that carry figures, from `tag` on
/// (the harness prints its `test ... ` before the child's own output).
fn print_figures(out: &str, tag: &str) {
    let figures: Vec<&str> = out.lines().filter_map(|l| l.find(tag).map(|i| &l[i..])).collect();
    assert!(!figures.is_empty(), "the child printed no {tag} figures:\n{out}");
    for line in figures {
        println!("{line}");
    }
}

/// Whether this process is the child re-executed for `test`.
fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|t| t == test)
}

// ---------------------------------------------------------------------------
// EMFILE during accept

/// Connections the server may hold at once under the lowered limit.
const FD_SLOTS: u64 = 4;
/// Clients, all connected before the limit is lowered: six times the slots.
const EMFILE_CLIENTS: usize = 24;
/// How long the server holds each connection after answering it.
const HOLD: Duration = Duration::from_millis(40);
/// The server's pause after an `EMFILE`.
const BACKOFF: Duration = Duration::from_millis(5);

/// What a client's id is answered with.
fn answer(id: u32) -> u32 {
    id.wrapping_mul(2_654_435_761) ^ 0x5a5a_5a5a
}

/// Answers one client, holds its connection (and so its fd) a while, then
/// closes it.
async fn answer_and_hold(mut s: TcpStream, live: Rc<Cell<(u64, u64)>>) {
    let (now, most) = live.get();
    live.set((now + 1, most.max(now + 1)));
    let mut id = [0u8; 4];
    s.read_exact(&mut id).await.expect("read a client's id");
    s.write_all(&answer(u32::from_le_bytes(id)).to_le_bytes()).await.expect("answer");
    s.flush().await.expect("flush the answer");
    tally::time::sleep(HOLD).await;
    s.close().await.expect("close");
    drop(s);
    let (now, most) = live.get();
    live.set((now - 1, most));
}

const EMFILE_TEST: &str = "emfile_during_accept_backs_off_then_serves_every_pending_client";

/// What the API does at the fd limit: `accept` returns `Err` with raw OS
/// error `EMFILE` (the multishot accept ends with it, and the next `accept`
/// arms a new one), and an `accept` made again at once fails the same way
/// at once: it does not wait for an fd to free up, so a server must back
/// off. The connection stays in the kernel's queue, and the listener
/// accepts it once an fd is free.
#[test]
fn emfile_during_accept_backs_off_then_serves_every_pending_client() {
    if is_child(EMFILE_TEST) {
        emfile_child();
        return;
    }
    let out = run_child(EMFILE_TEST, Duration::from_secs(60));
    print_figures(&out, "emfile:");
}

/// The child half: the server runs here, under an fd limit a few fds above
/// what is open, and its clients are std threads whose sockets were opened
/// before the limit came down.
fn emfile_child() {
    let rt = LocalReactor::new().unwrap();
    let backend = rt.metrics().backend;
    bounded(&rt, "the EMFILE server", async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fds_before = open_fds().len();

        // Every client is connected (the kernel completes the handshake
        // into the accept queue) before the limit is lowered.
        let clients: Vec<_> = (0..EMFILE_CLIENTS as u32)
            .map(|id| {
                let s = std::net::TcpStream::connect(addr).expect("connect");
                std::thread::spawn(move || client(s, id))
            })
            .collect();

        // The limit caps fd numbers, not counts: every free number below it
        // is a slot. Fds inherited from whatever started the tests may sit
        // high above the others: fill the holes below them, so that only
        // the slots above the highest stay free.
        let open = open_fds();
        let highest = *open.iter().max().unwrap();
        let fillers = fill_fd_holes_below(highest);
        let open = open_fds();
        let limit = highest as u64 + 1 + FD_SLOTS;
        let slots = limit - open.len() as u64;
        assert!(slots < EMFILE_CLIENTS as u64 / 2, "{slots} free fds: no EMFILE would come");
        let old = nofile_limit();
        set_nofile_limit(libc::rlimit { rlim_cur: limit, rlim_max: old.rlim_max });

        let start = Instant::now();
        let cpu_start = cpu_time();
        let mut handlers = Vec::new();
        // Handlers running now, and the most at once.
        let live = Rc::new(Cell::new((0, 0)));
        let (mut emfiles, mut immediate_retry) = (0u32, "not made");
        while handlers.len() < EMFILE_CLIENTS {
            match listener.accept().await {
                Ok((s, _)) => handlers.push(tally::spawn(answer_and_hold(s, live.clone()))),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                    emfiles += 1;
                    if emfiles == 1 {
                        // An accept made again at once does not wait for an
                        // fd to free up: it fails again (or, if a handler's
                        // close raced it, succeeds), promptly.
                        let retry = tally::time::timeout(Duration::from_secs(1), listener.accept())
                            .await
                            .expect("an accept at the fd limit must not hang");
                        match retry {
                            Ok((s, _)) => {
                                handlers.push(tally::spawn(answer_and_hold(s, live.clone())));
                                immediate_retry = "a connection (a slot had freed)";
                            }
                            Err(e) => {
                                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                                emfiles += 1;
                                immediate_retry = "EMFILE again, at once";
                            }
                        }
                    }
                    tally::time::sleep(BACKOFF).await;
                }
                Err(e) => panic!("accept failed with something other than EMFILE: {e}"),
            }
        }
        for h in handlers {
            h.await.expect("a handler");
        }
        let elapsed = start.elapsed();
        let cpu = cpu_time() - cpu_start;
        let mut client_sockets = Vec::new();
        for (id, c) in clients.into_iter().enumerate() {
            let (got, s) = c.join().expect("a client thread");
            assert_eq!(got, answer(id as u32), "client {id}: a wrong answer");
            client_sockets.push(s);
        }
        set_nofile_limit(old);
        drop((fillers, client_sockets));
        assert!(emfiles > 0, "no accept failed with EMFILE under a limit of {limit}");
        let most_live = live.get().1;
        assert!(most_live <= slots, "{most_live} connections at once in {slots} free fds");
        // One error per accept call, and the server sleeps after each: the
        // runtime makes no storm of them.
        let most = elapsed.as_millis() as u32 / BACKOFF.as_millis() as u32 + 2;
        assert!(emfiles <= most, "{emfiles} EMFILE errors in {elapsed:?}");
        // A server that backs off must not burn the CPU while it waits; the
        // clients only block. On a loaded machine CPU time only shrinks.
        assert!(
            cpu < elapsed / 2,
            "the EMFILE phase used {cpu:?} of CPU in {elapsed:?} of wall time: a spin"
        );

        // Every accepted fd is closed (through the ring, so let it turn).
        let mut fds_after = open_fds().len();
        let deadline = Instant::now() + Duration::from_secs(2);
        while fds_after != fds_before && Instant::now() < deadline {
            tally::time::sleep(Duration::from_millis(10)).await;
            fds_after = open_fds().len();
        }
        assert_eq!(fds_after, fds_before, "fds leaked: {:?}", open_fds());
        println!(
            "emfile: backend {backend:?}; {EMFILE_CLIENTS} clients, {slots} free fds under a \
             limit of {limit}; {emfiles} EMFILE errors (an accept made again at once got \
             {immediate_retry}); all served in {elapsed:?}, {most_live} at most at once, using \
             {cpu:?} of CPU; fds \
             {fds_before} before, {fds_after} after"
        );
    });
}

/// Opens `/dev/null` into every free fd number up to `highest`, and
/// returns the files that hold them.
fn fill_fd_holes_below(highest: i32) -> Vec<std::fs::File> {
    let mut fillers = Vec::new();
    loop {
        let f = std::fs::File::open("/dev/null").expect("open /dev/null");
        if f.as_raw_fd() > highest {
            return fillers;
        }
        fillers.push(f);
    }
}

/// A client: sends its id, reads the answer, then waits for the server to
/// close. Bounded by socket timeouts. It returns its socket, still open: a
/// client that closed would free an fd number below the server's limit.
fn client(mut s: std::net::TcpStream, id: u32) -> (u32, std::net::TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&id.to_le_bytes()).expect("send the id");
    let mut got = [0u8; 4];
    s.read_exact(&mut got).expect("read the answer");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("read to the server's close");
    assert!(rest.is_empty(), "client {id}: bytes after the answer");
    (u32::from_le_bytes(got), s)
}

// ---------------------------------------------------------------------------
// Peer resets

/// A connected pair of tally streams on `listener`: (client, server).
async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().unwrap();
    let (client, accepted) =
        futures::future::join(TcpStream::connect(addr), listener.accept()).await;
    (client.expect("connect"), accepted.expect("accept").0)
}

/// One round trip of `n` bytes each way between `a` and `b`, checked.
async fn round_trip(a: &mut TcpStream, b: &mut TcpStream, n: usize) {
    let sent: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
    let mut got = vec![0u8; n];
    let (w, r) = futures::future::join(a.write_all(&sent), b.read_exact(&mut got)).await;
    w.expect("round trip: write");
    r.expect("round trip: read");
    a.flush().await.expect("round trip: flush");
    assert_eq!(got, sent, "round trip a -> b");
    let (w, r) = futures::future::join(b.write_all(&sent), a.read_exact(&mut got)).await;
    w.expect("round trip back: write");
    r.expect("round trip back: read");
    b.flush().await.expect("round trip back: flush");
    assert_eq!(got, sent, "round trip b -> a");
}

/// Blocks `SIGPIPE` in the calling thread for its life, and says whether
/// one was raised: a blocked signal stays pending even when its disposition
/// is to ignore it (as Rust's runtime sets `SIGPIPE`), so `sigpending`
/// sees a send that forgot `MSG_NOSIGNAL`. The reactor's sends run on this
/// thread (epoll) or on behalf of it (io_uring).
struct SigpipeWatch {
    old: libc::sigset_t,
}

impl SigpipeWatch {
    fn new() -> SigpipeWatch {
        let (set, mut old) = (sigset_of(libc::SIGPIPE), empty_sigset());
        // SAFETY: both sets are valid sigset_t values.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
        assert_eq!(rc, 0, "pthread_sigmask");
        SigpipeWatch { old }
    }

    /// Whether a `SIGPIPE` is pending for this thread or the process.
    fn raised(&self) -> bool {
        let mut pending = empty_sigset();
        // SAFETY: `pending` is a valid, writable sigset_t.
        assert_eq!(unsafe { libc::sigpending(&mut pending) }, 0, "sigpending");
        // SAFETY: `pending` is a valid sigset_t; SIGPIPE is a signal number.
        unsafe { libc::sigismember(&pending, libc::SIGPIPE) == 1 }
    }
}

impl Drop for SigpipeWatch {
    fn drop(&mut self) {
        // Take a pending SIGPIPE before unblocking, so that it is not
        // delivered (ignored, but still) to this thread afterwards.
        if self.raised() {
            let set = sigset_of(libc::SIGPIPE);
            let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `set` is valid; a null siginfo is allowed.
            unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) };
        }
        // SAFETY: `old` is the mask this thread had.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    set
}

fn sigset_of(signo: i32) -> libc::sigset_t {
    let mut set = empty_sigset();
    // SAFETY: `set` is a valid sigset_t; `signo` is a signal number.
    unsafe { libc::sigaddset(&mut set, signo) };
    set
}

/// Whether `e` is what a write to a reset connection reports.
fn is_reset_write_error(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE))
}

/// Bytes written before the peer resets (its reader takes this many first).
const READ_BEFORE_RESET: usize = 1 << 20;
/// What the writer tries to send: far more than the socket buffers hold.
const WRITE_TOTAL: usize = 64 << 20;
/// The source buffer, written again and again.
const WRITE_CALL: usize = 1 << 20;

#[test]
fn a_peer_reset_mid_write_fails_the_write_without_sigpipe_and_others_go_on() {
    let rt = LocalReactor::new().unwrap();
    let backend = rt.metrics().backend;
    let watch = SigpipeWatch::new();
    let (accepted, failed_after, elapsed) = bounded(&rt, "a write to a reset peer", async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut by_a, mut by_b) = pair(&listener).await;

        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut buf = vec![0u8; READ_BEFORE_RESET];
            s.read_exact(&mut buf).expect("the peer's first megabyte");
            reset(s);
        });
        let (mut s, _) = listener.accept().await.expect("accept the peer");
        let chunk: Vec<u8> = (0..WRITE_CALL).map(|i| i as u8).collect();
        let start = Instant::now();
        let mut accepted = 0;
        let err = loop {
            if accepted >= WRITE_TOTAL {
                match s.flush().await {
                    Ok(()) => panic!("{WRITE_TOTAL} bytes written to a peer that reset"),
                    Err(e) => break e,
                }
            }
            // `write`, not `write_all`, to count every byte the stream took.
            let from = accepted % WRITE_CALL;
            match s.write(&chunk[from..]).await {
                Ok(0) => panic!("a write to a reset peer returned 0"),
                Ok(n) => accepted += n,
                Err(e) => break e,
            }
        };
        let elapsed = start.elapsed();
        assert!(is_reset_write_error(&err), "a write to a reset peer failed with {err:?}");
        peer.join().expect("the peer thread");
        // The stream stays failed: another write and flush report an error
        // too, promptly, rather than hanging or succeeding.
        let again = async {
            s.write_all(&chunk[..4096]).await?;
            s.flush().await
        };
        let again = tally::time::timeout(Duration::from_secs(5), again)
            .await
            .expect("a write after the reset hung");
        let again = again.expect_err("a write after the reset succeeded");
        assert!(is_reset_write_error(&again), "a second write failed with {again:?}");
        drop(s);

        // The runtime goes on: the connection that was open all along, and
        // a new one.
        round_trip(&mut by_a, &mut by_b, 64 * 1024).await;
        let (mut c, mut d) = pair(&listener).await;
        round_trip(&mut c, &mut d, 64 * 1024).await;
        (accepted, err, elapsed)
    });
    assert!(!watch.raised(), "a write to a reset peer raised SIGPIPE");
    drop(watch);
    assert!(accepted < WRITE_TOTAL, "the reset came after the whole write");
    println!(
        "reset mid-write: backend {backend:?}; the stream took {accepted} of {WRITE_TOTAL} \
         bytes, then a write failed with {failed_after:?} after {elapsed:?}; no SIGPIPE"
    );
}

#[test]
fn a_peer_reset_mid_read_ends_the_read_and_others_go_on() {
    let rt = LocalReactor::new().unwrap();
    let backend = rt.metrics().backend;
    let outcome = bounded(&rt, "a read from a reset peer", async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut by_a, mut by_b) = pair(&listener).await;

        let (reading_tx, reading_rx) = std::sync::mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(b"hello").expect("the peer's greeting");
            reading_rx.recv_timeout(Duration::from_secs(20)).expect("the server's read");
            // Give the read time to be armed and waiting in the reactor.
            std::thread::sleep(Duration::from_millis(50));
            reset(s);
        });
        let (mut s, _) = listener.accept().await.expect("accept the peer");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.expect("the greeting");
        assert_eq!(&buf, b"hello");
        reading_tx.send(()).unwrap();
        let start = Instant::now();
        let mut more = [0u8; 4096];
        let read = tally::time::timeout(Duration::from_secs(5), s.read(&mut more))
            .await
            .expect("a read in progress when the peer reset hung");
        let elapsed = start.elapsed();
        let outcome = match read {
            Ok(0) => "EOF".to_string(),
            Ok(n) => panic!("a read from a reset peer returned {n} bytes"),
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => format!("{e:?}"),
            Err(e) => panic!("a read from a reset peer failed with {e:?}"),
        };
        // And the stream stays ended: another read does not hang.
        let next = tally::time::timeout(Duration::from_secs(5), s.read(&mut more))
            .await
            .expect("a second read after the reset hung");
        assert!(matches!(next, Ok(0) | Err(_)), "a second read returned {next:?}");
        peer.join().expect("the peer thread");
        drop(s);

        round_trip(&mut by_a, &mut by_b, 64 * 1024).await;
        let (mut c, mut d) = pair(&listener).await;
        round_trip(&mut c, &mut d, 64 * 1024).await;
        format!("{outcome} after {elapsed:?}")
    });
    println!("reset mid-read: backend {backend:?}; the pending read returned {outcome}");
}

// ---------------------------------------------------------------------------
// A slow reader

/// What the server writes.
const SLOW_TOTAL: usize = 100 << 20;
/// Each write call, and each of the peer's reads.
const SLOW_CHUNK: usize = 64 * 1024;
/// What the peer reads before it stalls.
const SLOW_FIRST: usize = 1 << 20;
/// How long the peer stops reading.
const STALL: Duration = Duration::from_millis(300);
/// How much the RSS may grow during the stall. What the transfer holds in
/// user memory is a few chunks: the writer's 64 KiB source, the stream's
/// write buffer (at most 64 KiB), a few 4 KiB ring buffers, the peer's
/// 64 KiB, two thread stacks; the kernel's socket buffers are not in the
/// RSS. A runtime that queued unsent bytes would grow by up to 100 MB
/// here. 32 MB leaves room for allocator arenas and for the other tests of
/// this file, which run in parallel and each touch a few MiB.
const RSS_GROWTH_BOUND: u64 = 32 << 20;

/// The 64-bit word at word index `k` of the slow reader's stream.
fn word(k: u64) -> u64 {
    k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k >> 17)
}

/// Fills `buf` with the stream's bytes from `offset` (a multiple of 8).
fn fill_pattern(buf: &mut [u8], offset: usize) {
    let first = (offset / 8) as u64;
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&word(first + i as u64).to_le_bytes());
    }
}

/// What the slow peer saw.
struct SlowPeer {
    /// RSS just before the stall, and the most seen during it.
    rss_stall_start: u64,
    rss_stall_max: u64,
    /// Bytes the writer had handed to the stream when the stall ended.
    written_at_stall_end: u64,
    /// The most RSS seen during the whole transfer.
    rss_transfer_max: u64,
    verified: usize,
}

fn slow_peer(addr: SocketAddr, written: Arc<AtomicU64>) -> SlowPeer {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (mut buf, mut want) = (vec![0u8; SLOW_CHUNK], vec![0u8; SLOW_CHUNK]);
    let mut offset = 0;
    let mut rss_transfer_max = 0;
    let mut read_chunk = |s: &mut std::net::TcpStream, offset: &mut usize| {
        s.read_exact(&mut buf).unwrap_or_else(|e| panic!("read at {offset}: {e}"));
        fill_pattern(&mut want, *offset);
        assert!(buf == want, "wrong bytes in the 64 KiB at offset {offset}");
        *offset += SLOW_CHUNK;
    };
    while offset < SLOW_FIRST {
        read_chunk(&mut s, &mut offset);
    }
    let rss_stall_start = rss_bytes();
    let mut rss_stall_max = rss_stall_start;
    let stall = Instant::now();
    while stall.elapsed() < STALL {
        rss_stall_max = rss_stall_max.max(rss_bytes());
        std::thread::sleep(Duration::from_millis(5));
    }
    let written_at_stall_end = written.load(Ordering::SeqCst);
    while offset < SLOW_TOTAL {
        read_chunk(&mut s, &mut offset);
        if offset.is_multiple_of(4 << 20) {
            rss_transfer_max = rss_transfer_max.max(rss_bytes());
        }
    }
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("read to EOF");
    assert!(rest.is_empty(), "{} bytes after the {SLOW_TOTAL}", rest.len());
    SlowPeer {
        rss_stall_start,
        rss_stall_max,
        written_at_stall_end,
        rss_transfer_max,
        verified: offset,
    }
}

const SLOW_TEST: &str = "a_slow_reader_bounds_memory_and_gets_every_byte";

/// Runs in a child process: the RSS it measures is then the transfer's
/// alone, not that of the other tests of this file running beside it (a
/// failing one's panic, symbolizing its backtrace, reads tens of MiB of
/// debug info).
#[test]
fn a_slow_reader_bounds_memory_and_gets_every_byte() {
    if is_child(SLOW_TEST) {
        slow_reader_child();
        return;
    }
    let out = run_child(SLOW_TEST, Duration::from_secs(60));
    print_figures(&out, "slow reader:");
}

fn slow_reader_child() {
    let rt = LocalReactor::new().unwrap();
    let backend = rt.metrics().backend;
    let rss_before = rss_bytes();
    let written = Arc::new(AtomicU64::new(0));
    let (peer, elapsed) = bounded(&rt, "100 MB to a slow reader", async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn({
            let written = written.clone();
            move || slow_peer(addr, written)
        });
        let (mut s, _) = listener.accept().await.expect("accept");
        let start = Instant::now();
        let mut chunk = vec![0u8; SLOW_CHUNK];
        for offset in (0..SLOW_TOTAL).step_by(SLOW_CHUNK) {
            fill_pattern(&mut chunk, offset);
            s.write_all(&chunk).await.expect("write to the slow reader");
            written.fetch_add(SLOW_CHUNK as u64, Ordering::SeqCst);
        }
        s.close().await.expect("flush and close");
        let elapsed = start.elapsed();
        drop(s);
        (peer, elapsed)
    });
    let peer = peer.join().expect("the slow peer");
    let growth = peer.rss_stall_max.saturating_sub(rss_before);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "slow reader: backend {backend:?}; {} MiB in {elapsed:?}; RSS {:.1} MiB before, {:.1} \
         at the stall's start, at most {:.1} during the {STALL:?} stall (+{:.1}), at most {:.1} \
         during the transfer; {:.1} MiB handed to the stream by the stall's end",
        SLOW_TOTAL >> 20,
        mib(rss_before),
        mib(peer.rss_stall_start),
        mib(peer.rss_stall_max),
        mib(growth),
        mib(peer.rss_transfer_max),
        mib(peer.written_at_stall_end),
    );
    assert_eq!(peer.verified, SLOW_TOTAL);
    assert!(
        growth < RSS_GROWTH_BOUND,
        "RSS grew by {:.1} MiB during the stall (bound {} MiB)",
        mib(growth),
        RSS_GROWTH_BOUND >> 20
    );
    let transfer_growth = peer.rss_transfer_max.saturating_sub(rss_before);
    assert!(
        transfer_growth < RSS_GROWTH_BOUND,
        "RSS grew by {:.1} MiB during the transfer",
        mib(transfer_growth)
    );
    // Back pressure reached the writer: it stalled with the reader.
    assert!(
        peer.written_at_stall_end < (SLOW_TOTAL / 2) as u64,
        "the writer handed {} bytes to the stream while the reader stalled",
        peer.written_at_stall_end
    );
}
