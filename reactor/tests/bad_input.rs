//! Bad input gets an error or a negative completion: never a panic, a hang
//! or a leaked fd. Counts `/proc/self/fd`, so this binary holds one test.

mod util;

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tally_reactor::{Builder, Cancel, Op, Reactor, Signals};
use util::{TICK, completions, open_fds, turn_until, wait_completion};

/// An fd number no process can have open (it is past any RLIMIT_NOFILE).
const NEVER_OPEN: i32 = i32::MAX - 7;

#[test]
fn bad_input_is_an_error_not_a_panic_hang_or_leak() {
    let baseline = open_fds();
    {
        let reactor = Reactor::new().unwrap();
        registering_bad_fds(&reactor);
        ops_on_bad_fds(&reactor);
        misuse_of_the_api(&reactor);
        odd_files(&reactor);
        closes_that_never_run(&reactor);
        assert_eq!(reactor.metrics().registrations, 0);
        turn_until(&reactor, "every op to finish", || reactor.metrics().ops_in_flight == 0);
    }
    odd_builders();
    assert_eq!(open_fds(), baseline, "fds leaked");
}

fn registering_bad_fds(reactor: &Reactor) {
    for fd in [-1, NEVER_OPEN] {
        let err = reactor.register_fd(fd, Signals::READABLE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "fd {fd}: {err}");
    }
    // A closed fd. (No other test runs in this binary, so nothing reuses
    // the number in between.)
    let (rx, _tx) = std::io::pipe().unwrap();
    let closed = OwnedFd::from(rx).into_raw_fd();
    // SAFETY: we own `closed` and close it exactly once here.
    drop(unsafe { OwnedFd::from_raw_fd(closed) });
    let err = reactor.register_fd(closed, Signals::READABLE).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF));

    // Registering one fd twice.
    let (rx, _tx) = std::io::pipe().unwrap();
    let first = reactor.register_fd(rx.as_raw_fd(), Signals::READABLE).unwrap();
    let err = reactor.register_fd(rx.as_raw_fd(), Signals::WRITABLE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    drop(first);
    // Free again once the first registration is gone.
    let again = reactor.register_fd(rx.as_raw_fd(), Signals::READABLE).unwrap();
    drop(again);
    assert_eq!(reactor.metrics().registrations, 0);
}

fn ops_on_bad_fds(reactor: &Reactor) {
    let reg = reactor.register();
    let (pipe_rx, _pipe_tx) = std::io::pipe().unwrap();
    let addr = "127.0.0.1:9".parse().unwrap();
    let ops = [
        (Op::read(-1, Vec::with_capacity(8)), libc::EBADF),
        (Op::write(NEVER_OPEN, b"x".to_vec()), libc::EBADF),
        (Op::recv(-1, Vec::with_capacity(8), 0), libc::EBADF),
        (Op::send(NEVER_OPEN, b"x".to_vec(), 0), libc::EBADF),
        (Op::accept(-1), libc::EBADF),
        (Op::connect(-1, addr), libc::EBADF),
        (Op::shutdown(NEVER_OPEN, libc::SHUT_RDWR), libc::EBADF),
        (Op::poll(-1, Signals::READABLE), libc::EBADF),
        // Socket operations on a pipe.
        (Op::recv(pipe_rx.as_raw_fd(), Vec::with_capacity(8), 0), libc::ENOTSOCK),
        (Op::accept(pipe_rx.as_raw_fd()), libc::ENOTSOCK),
    ];
    for (op, errno) in ops {
        let name = op.name();
        let id = reg.submit(op).unwrap();
        let (c, _) = wait_completion(reactor, &reg, id);
        assert!(c.result < 0, "{name} on a bad fd succeeded: {}", c.result);
        assert_eq!(-c.result, errno, "{name}: {}", util::errno(c.result));
        // A failed read/recv/write/send still hands its buffer back.
        let _ = reg.reclaim(id);
    }
    // Multishot ops on a bad fd end at once, with an error, and do not
    // re-arm forever.
    let f = reactor.features();
    let mut multi = vec![Op::poll_multi(-1, Signals::READABLE)];
    if f.multishot_accept {
        multi.push(Op::accept_multi(-1));
    }
    if f.multishot_recv && f.buf_ring {
        let group = reactor.buf_ring(2, 64).unwrap();
        multi.push(Op::recv_multi(-1, group));
    }
    for op in multi {
        let name = op.name();
        let id = reg.submit(op).unwrap();
        let (c, _) = wait_completion(reactor, &reg, id);
        assert_eq!(c.result, -libc::EBADF, "{name}");
        assert!(!c.more(), "{name} keeps going on a bad fd");
    }
    for _ in 0..3 {
        reactor.turn(Some(TICK)).unwrap();
    }
    assert!(completions(&reg.try_drain()).is_empty(), "a failed multishot op re-armed");
    assert_eq!(reactor.metrics().ops_in_flight, 0);
}

fn misuse_of_the_api(reactor: &Reactor) {
    let a = reactor.register();
    let b = reactor.register();

    // Buffer rings: bad shapes are refused.
    for (entries, size) in [(0, 4096), (3, 4096), (4, 0)] {
        let err = reactor.buf_ring(entries, size).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{entries} x {size}");
    }
    // A buffer group from another reactor is unknown here.
    let other = Reactor::new().unwrap();
    if other.features().buf_ring {
        let foreign = other.buf_ring(2, 64).unwrap();
        let fresh = Reactor::new().unwrap();
        let reg = fresh.register();
        let err = reg.submit(Op::recv_multi(0, foreign)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    drop(other);

    // Cancelling, reclaiming or taking buffers for ops that are not ours,
    // not finished, or already gone: quiet refusals.
    let timer = a.submit(Op::timeout(Duration::from_secs(30))).unwrap();
    assert!(matches!(b.cancel(timer), Cancel::NotFound), "b cancelled a's op");
    assert!(b.reclaim(timer).is_none());
    let read = a.submit(Op::read(-1, Vec::with_capacity(4))).unwrap();
    assert!(a.reclaim(read).is_none(), "reclaimed before completion");
    let (c, _) = wait_completion(reactor, &a, read);
    assert!(b.reclaim(read).is_none());
    assert!(b.buffer(&c).is_none(), "a completion without a buffer lent one");
    b.release_buffer(&c);
    assert!(a.reclaim(read).is_some());
    assert!(a.reclaim(read).is_none(), "reclaimed twice");
    assert!(matches!(a.cancel(timer), Cancel::Cancelled(_)));
    assert!(matches!(a.cancel(timer), Cancel::NotFound), "cancelled twice");
    drop(a);
    drop(b);
}

fn odd_files(reactor: &Reactor) {
    // A regular file (here a memfd, on tmpfs) and a directory are always
    // "ready" and cannot wait for readiness: as with epoll (EPERM),
    // watching them is refused at once rather than left to spin the
    // reactor with an edge every turn.
    // SAFETY: the name is a valid C string; memfd_create takes no other pointers.
    let memfd = unsafe { libc::memfd_create(c"tally-bad-input".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(memfd >= 0);
    // SAFETY: memfd_create just returned this fd; nothing else owns it.
    let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
    let dir = File::open("/").unwrap();
    for fd in [memfd.as_raw_fd(), dir.as_raw_fd()] {
        let err = reactor.register_fd(fd, Signals::READABLE).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    }
    // Files that cannot wait but pass that check (a character device
    // without poll, a procfs file without poll) are caught at run time:
    // the registration's poll ends with -EPERM instead of re-arming on
    // every turn, and the reactor can block again.
    let null = File::open("/dev/null").unwrap();
    let status = File::open("/proc/self/status").unwrap();
    for f in [&null, &status] {
        let reg = reactor.register_fd(f.as_raw_fd(), Signals::READABLE).unwrap();
        let got = util::gather_until(reactor, &reg, "the unpollable file's EPERM", |p| {
            completions(p).iter().any(|c| c.result == -libc::EPERM)
        });
        assert!(util::signal_totals(&got).0.contains(Signals::READABLE));
        assert_eq!(reactor.metrics().ops_in_flight, 0, "the poll is over");
        let start = std::time::Instant::now();
        reactor.turn(Some(Duration::from_millis(30))).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20), "the reactor still spins");
        assert!(completions(&reg.try_drain()).is_empty());
    }
    // A procfs file that does support poll is watched normally, and the
    // reactor sleeps while nothing happens.
    let mounts = File::open("/proc/self/mounts").unwrap();
    let reg = reactor.register_fd(mounts.as_raw_fd(), Signals::PRIORITY).unwrap();
    for _ in 0..3 {
        let start = std::time::Instant::now();
        reactor.turn(Some(Duration::from_millis(30))).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20), "a pollable file spins");
    }
    assert!(completions(&reg.try_drain()).is_empty());
    assert_eq!(reactor.metrics().ops_in_flight, 1);
    drop(reg);

    // Socket shut down under a pending recv: it completes with 0 (EOF).
    let (a, b) = UnixStream::pair().unwrap();
    let reg = reactor.register();
    let id = reg.submit(Op::recv(a.as_raw_fd(), Vec::with_capacity(8), 0)).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();
    drop(b);
    let (c, _) = wait_completion(reactor, &reg, id);
    assert_eq!(c.result, 0);
    assert_eq!(reg.reclaim(id).unwrap(), Vec::<u8>::new());
}

fn closes_that_never_run(reactor: &Reactor) {
    // An unsubmitted close still closes its fd when dropped.
    let before = open_fds();
    let (_rx, tx) = std::io::pipe().unwrap();
    assert_eq!(open_fds(), before + 2);
    drop(Op::close(OwnedFd::from(tx)));
    assert_eq!(open_fds(), before + 1, "an unsubmitted close leaked its fd");

    // A close submitted and completed closes it exactly once: the fds
    // opened right after (which may reuse the number) stay open.
    let (rx, tx) = std::io::pipe().unwrap();
    let reg = reactor.register();
    let id = reg.submit(Op::close(OwnedFd::from(tx))).unwrap();
    let (c, _) = wait_completion(reactor, &reg, id);
    assert_eq!(c.result, 0);
    let (rx2, tx2) = std::io::pipe().unwrap();
    for _ in 0..3 {
        reactor.turn(Some(Duration::ZERO)).unwrap();
    }
    drop(reg);
    // SAFETY: F_GETFD reads flags only.
    assert!(unsafe { libc::fcntl(rx2.as_raw_fd(), libc::F_GETFD) } >= 0);
    // SAFETY: as above.
    assert!(unsafe { libc::fcntl(tx2.as_raw_fd(), libc::F_GETFD) } >= 0);
    drop((rx, rx2, tx2, _rx));
    assert_eq!(open_fds(), before);
}

fn odd_builders() {
    for entries in [0, 1, 3, 100_000] {
        match Builder::new().entries(entries).queue_cap(0).user_cap(0).build() {
            Ok(r) => {
                let reg = r.register();
                let id = reg.submit(Op::nop()).unwrap();
                assert_eq!(wait_completion(&r, &reg, id).0.result, 0);
            }
            Err(e) => println!("entries({entries}): {e}"),
        }
    }
}
