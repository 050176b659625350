//! Model-based driver for the reactor itself: interprets bytes as
//! operations on a real `Reactor` (on whichever backend `TALLY_BACKEND`
//! picks) with a tiny packet queue and a four-buffer provided-buffer group,
//! over two real socketpairs, and checks what the reactor owes after every
//! step and at the end.
//!
//! This file uses only `std` and `tally_reactor`. The fuzz target calls it
//! through `libfuzzer-sys`, and `reactor/tests/fuzz_corpus_replay.rs`
//! includes it with `#[path]` to replay the corpus on stable, on both
//! backends.
//!
//! # Encoding
//!
//! The first byte sets the queue cap, `1 + b % 3`. Then each operation is
//! an opcode byte, `op % 13`, followed by its arguments; input that runs
//! out in the middle of an operation ends the run. `r` names one of two
//! registrations (`r % 2`; a dropped one is made again when next used), `s`
//! one of two sockets (`s % 2`), `n` a size, `1 + n % 64`, and `k` one of
//! the live operations (`k % live`).
//!
//! | op | operation                                         | arguments |
//! |----|---------------------------------------------------|-----------|
//! | 0  | submit a recv of up to `n` bytes                  | `r s n`   |
//! | 1  | submit a send of `n` bytes                        | `r s n`   |
//! | 2  | submit a multishot recv into the buffer group     | `r s`     |
//! | 3  | submit a multishot poll (readable and writable)   | `r s`     |
//! | 4  | submit a timeout of `n % 3` ms                    | `r n`     |
//! | 5  | cancel live operation `k`                         | `k`       |
//! | 6  | drop registration `r`                             | `r`       |
//! | 7  | drain registration `r`                            | `r`       |
//! | 8  | hand back every provided buffer held              |           |
//! | 9  | one turn with a zero timeout                      |           |
//! | 10 | the peer writes `n` bytes                         | `s n`     |
//! | 11 | the peer reads what it can                        | `s`       |
//! | 12 | the peer shuts down its writing side (EOF for us) | `s`       |
//!
//! # What is checked
//!
//! - Nothing panics, and no call returns an error the model does not
//!   expect.
//! - Every packet is for an operation its registration submitted and that
//!   is still live (no stale or foreign completion), and no operation
//!   completes after its final completion.
//! - Bytes are conserved: at the end, on a socket where no receive was
//!   cancelled or dropped while live, the bytes received through the
//!   reactor plus those left in the socket are exactly the bytes the peer
//!   wrote (as a multiset: two registrations' packets are drained in either
//!   order); and the peer reads exactly what the sends reported sent, plus
//!   at most what sends cancelled or dropped while live held.
//! - At the end, once every registration is dropped, `ops_in_flight` and
//!   `registrations` return to 0; every provided buffer is back in the
//!   ring (a fresh multishot recv fills all four); and once the reactor is
//!   dropped, `/proc/self/fd` holds as many entries as before the run.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use tally_reactor::{
    BufGroup, Cancel, Op, OpId, PacketKind, PacketList, Reactor, RecvBuf, Registration, Signals,
};

const REGS: usize = 2;
const SOCKETS: usize = 2;
const BUFS: u16 = 4;
const BUF_SIZE: u32 = 64;

/// What one run exercised. The corpus replay test checks that the
/// committed seeds, taken together, reach every branch counted here.
#[derive(Clone, Copy, Debug, Default)]
pub struct Coverage {
    /// Operations run.
    pub ops: usize,
    /// Bytes received through one-shot recvs.
    pub recv_bytes: usize,
    /// Bytes received through provided buffers.
    pub buffer_bytes: usize,
    /// Sends that completed.
    pub sends: usize,
    /// Cancels that found the op live.
    pub cancelled_live: usize,
    /// Cancels that found the op finished first.
    pub cancelled_done: usize,
    /// Registrations dropped with operations live.
    pub dropped_busy: usize,
    /// Multishot completions without `more` (ended by the kernel).
    pub multishot_ends: usize,
    /// Timeouts that fired.
    pub timeouts: usize,
}

impl std::ops::AddAssign for Coverage {
    fn add_assign(&mut self, o: Coverage) {
        self.ops += o.ops;
        self.recv_bytes += o.recv_bytes;
        self.buffer_bytes += o.buffer_bytes;
        self.sends += o.sends;
        self.cancelled_live += o.cancelled_live;
        self.cancelled_done += o.cancelled_done;
        self.dropped_busy += o.dropped_busy;
        self.multishot_ends += o.multishot_ends;
        self.timeouts += o.timeouts;
    }
}

/// Runs `data` (see the module docs); panics where the reactor breaks a
/// promise.
pub fn run(data: &[u8]) {
    let _ = run_with_coverage(data);
}

/// [`run`], also reporting what the run exercised.
pub fn run_with_coverage(data: &[u8]) -> Coverage {
    let mut input = Input { data, pos: 0 };
    let Some(cap) = input.byte() else { return Coverage::default() };
    let fds_before = open_fds();
    let mut h = Harness::new(1 + usize::from(cap % 3));
    while h.step(&mut input).is_some() {}
    let cov = h.finish();
    let fds_after = open_fds();
    assert_eq!(fds_after, fds_before, "the run leaked fds");
    cov
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Recv,
    Send(usize),
    RecvMulti,
    Poll,
    Timeout,
}

struct Live {
    reg: usize,
    id: OpId,
    kind: Kind,
    socket: usize,
}

struct Socket {
    ours: UnixStream,
    peer: UnixStream,
    /// Bytes the peer wrote, and what we received of them, in order.
    written: Vec<u8>,
    received: Vec<u8>,
    /// Bytes our sends sent, and what the peer read of them.
    sent: usize,
    peer_read: usize,
    /// Bytes of sends cancelled or dropped while live: the kernel may have
    /// sent them before the stop took effect, and such a completion is
    /// reclaimed, by contract, not delivered.
    maybe_sent: usize,
    /// A receive on it was cancelled or dropped while live: a completion
    /// racing the cancel is reclaimed, by contract, so bytes may be gone.
    tainted: bool,
    /// The peer shut its writing side down.
    peer_shut: bool,
}

struct Harness {
    reactor: Reactor,
    group: BufGroup,
    regs: Vec<Option<Registration>>,
    sockets: Vec<Socket>,
    live: Vec<Live>,
    held: Vec<RecvBuf>,
    next_byte: u8,
    cov: Coverage,
}

impl Harness {
    fn new(queue_cap: usize) -> Harness {
        let reactor = Reactor::builder().queue_cap(queue_cap).build().expect("reactor");
        let group = reactor.buf_ring(BUFS, BUF_SIZE).expect("buf_ring");
        let sockets = (0..SOCKETS)
            .map(|_| {
                let (ours, peer) = UnixStream::pair().expect("socketpair");
                ours.set_nonblocking(true).expect("nonblocking");
                peer.set_nonblocking(true).expect("nonblocking");
                Socket {
                    ours,
                    peer,
                    written: Vec::new(),
                    received: Vec::new(),
                    sent: 0,
                    peer_read: 0,
                    maybe_sent: 0,
                    tainted: false,
                    peer_shut: false,
                }
            })
            .collect();
        Harness {
            reactor,
            group,
            regs: (0..REGS).map(|_| None).collect(),
            sockets,
            live: Vec::new(),
            held: Vec::new(),
            next_byte: 0,
            cov: Coverage::default(),
        }
    }

    fn reg(&mut self, r: usize) -> &Registration {
        self.regs[r].get_or_insert_with(|| self.reactor.register())
    }

    fn submit(&mut self, r: usize, socket: usize, kind: Kind, op: Op) {
        let id = self.reg(r).submit(op).expect("submit");
        self.live.push(Live { reg: r, id, kind, socket });
    }

    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.byte()? % 13;
        self.cov.ops += 1;
        match op {
            0 | 1 => {
                let r = usize::from(input.byte()?) % REGS;
                let s = usize::from(input.byte()?) % SOCKETS;
                let n = 1 + usize::from(input.byte()?) % 64;
                let fd = self.sockets[s].ours.as_raw_fd();
                if op == 0 {
                    self.submit(r, s, Kind::Recv, Op::recv(fd, Vec::with_capacity(n), 0));
                } else {
                    // The peer checks the pattern and counts the bytes.
                    self.submit(r, s, Kind::Send(n), Op::send(fd, vec![0x5a; n], 0));
                }
            }
            2 | 3 => {
                let r = usize::from(input.byte()?) % REGS;
                let s = usize::from(input.byte()?) % SOCKETS;
                let fd = self.sockets[s].ours.as_raw_fd();
                if op == 2 {
                    self.submit(r, s, Kind::RecvMulti, Op::recv_multi(fd, self.group));
                } else {
                    let interest = Signals::READABLE | Signals::WRITABLE;
                    self.submit(r, s, Kind::Poll, Op::poll_multi(fd, interest));
                }
            }
            4 => {
                let r = usize::from(input.byte()?) % REGS;
                let ms = u64::from(input.byte()? % 3);
                self.submit(r, 0, Kind::Timeout, Op::timeout(Duration::from_millis(ms)));
            }
            5 => {
                let k = usize::from(input.byte()?);
                if !self.live.is_empty() {
                    self.cancel(k % self.live.len());
                }
            }
            6 => {
                let r = usize::from(input.byte()?) % REGS;
                self.drop_reg(r);
            }
            7 => {
                let r = usize::from(input.byte()?) % REGS;
                self.drain(r);
            }
            8 => self.held.clear(),
            9 => {
                self.reactor.turn(Some(Duration::ZERO)).expect("turn");
            }
            10 => {
                let s = usize::from(input.byte()?) % SOCKETS;
                let n = 1 + usize::from(input.byte()?) % 64;
                self.peer_write(s, n);
            }
            11 => {
                let s = usize::from(input.byte()?) % SOCKETS;
                self.peer_read(s);
            }
            _ => {
                let s = usize::from(input.byte()?) % SOCKETS;
                self.sockets[s].peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
                self.sockets[s].peer_shut = true;
            }
        }
        Some(())
    }

    fn peer_write(&mut self, s: usize, n: usize) {
        let bytes: Vec<u8> = (0..n)
            .map(|_| {
                self.next_byte = self.next_byte.wrapping_add(1);
                self.next_byte
            })
            .collect();
        let sock = &mut self.sockets[s];
        if sock.peer_shut {
            // A write would fail with EPIPE (and raise SIGPIPE under
            // libFuzzer's `main`, which does not ignore it as Rust's does).
            return;
        }
        match (&sock.peer).write(&bytes) {
            Ok(k) => sock.written.extend_from_slice(&bytes[..k]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("the peer's write failed: {e}"),
        }
    }

    fn peer_read(&mut self, s: usize) {
        let sock = &mut self.sockets[s];
        let mut buf = [0; 4096];
        loop {
            match (&sock.peer).read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    assert!(buf[..k].iter().all(|&b| b == 0x5a), "the peer read bytes nobody sent");
                    sock.peer_read += k;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("the peer's read failed: {e}"),
            }
        }
    }

    fn cancel(&mut self, k: usize) {
        let Live { reg: r, id, kind, socket } = self.live[k];
        let reg = self.regs[r].as_ref().expect("a live op's registration");
        let (list, finished) = match reg.cancel(id) {
            Cancel::NotFound => panic!("cancel of live {kind:?} op {id:?}: NotFound"),
            Cancel::Cancelled(list) => {
                self.cov.cancelled_live += 1;
                match kind {
                    Kind::Recv | Kind::RecvMulti => self.sockets[socket].tainted = true,
                    Kind::Send(n) => self.sockets[socket].maybe_sent += n,
                    Kind::Poll | Kind::Timeout => {}
                }
                (list, false)
            }
            Cancel::AlreadyCompleted(list) => {
                self.cov.cancelled_done += 1;
                (list, true)
            }
        };
        // What had arrived first is handed over as a drain's packets are.
        self.handle(r, list);
        let pos = self.live.iter().position(|l| l.id == id && l.reg == r);
        // An op that had finished gave its final completion in the list.
        assert!(
            !(finished && pos.is_some()),
            "a finished {kind:?} op's cancel held no final completion"
        );
        if let Some(pos) = pos {
            // The op is over for us: no packet of it may come after this.
            self.live.swap_remove(pos);
        }
    }

    fn drop_reg(&mut self, r: usize) {
        if self.regs[r].take().is_none() {
            return;
        }
        let before = self.live.len();
        let sockets = &mut self.sockets;
        self.live.retain(|l| {
            if l.reg != r {
                return true;
            }
            match l.kind {
                Kind::Recv | Kind::RecvMulti => sockets[l.socket].tainted = true,
                Kind::Send(n) => sockets[l.socket].maybe_sent += n,
                Kind::Poll | Kind::Timeout => {}
            }
            false
        });
        if self.live.len() != before {
            self.cov.dropped_busy += 1;
        }
    }

    fn drain(&mut self, r: usize) {
        let Some(reg) = self.regs[r].as_ref() else { return };
        let list = reg.try_drain();
        self.handle(r, list);
    }

    /// Checks and accounts for the packets `list` delivered to registration
    /// `r`.
    fn handle(&mut self, r: usize, mut list: PacketList) {
        for packet in list.drain(..) {
            let reg_token = self.regs[r].as_ref().expect("a draining registration").token();
            assert_eq!(packet.key(), reg_token, "a packet for another registration");
            let PacketKind::Completion(c) = packet.kind() else { continue };
            let pos =
                self.live.iter().position(|l| l.id == c.op() && l.reg == r).unwrap_or_else(|| {
                    panic!("a completion for op {:?}, not live here: {c:?}", c.op())
                });
            let live = &self.live[pos];
            let (kind, socket) = (live.kind, live.socket);
            let done = !c.more();
            match kind {
                Kind::Recv => {
                    let buf =
                        self.regs[r].as_ref().unwrap().reclaim(c.op()).expect("a recv's buffer");
                    assert!(c.result >= 0 || buf.is_empty(), "a failed recv returned bytes");
                    self.cov.recv_bytes += buf.len();
                    self.received(socket, &buf);
                }
                Kind::Send(n) => {
                    let buf =
                        self.regs[r].as_ref().unwrap().reclaim(c.op()).expect("a send's buffer");
                    assert_eq!(buf.len(), n, "a send's buffer came back changed");
                    assert!(c.result <= n as i32, "a send sent more than it had");
                    if c.result > 0 {
                        self.sockets[socket].sent += c.result as usize;
                        self.cov.sends += 1;
                    }
                }
                Kind::RecvMulti => {
                    if c.buffer().is_some() {
                        let buf =
                            self.regs[r].as_ref().unwrap().buffer(&c).expect("a named buffer");
                        assert_eq!(
                            buf.len() as i32,
                            c.result,
                            "a buffer's length is not its result"
                        );
                        self.cov.buffer_bytes += buf.len();
                        let bytes = buf.to_vec();
                        self.received(socket, &bytes);
                        self.held.push(buf);
                    }
                    if done {
                        self.cov.multishot_ends += 1;
                    }
                }
                Kind::Poll => {
                    if done {
                        self.cov.multishot_ends += 1;
                    }
                }
                Kind::Timeout => self.cov.timeouts += 1,
            }
            if done {
                self.live.swap_remove(pos);
            }
        }
    }

    fn received(&mut self, s: usize, bytes: &[u8]) {
        self.sockets[s].received.extend_from_slice(bytes);
    }

    /// Turns and drains until a turn delivers nothing more, handing
    /// provided buffers back as it goes; at most for 2 s.
    fn quiesce(&mut self) {
        let start = Instant::now();
        let mut quiet = 0;
        while quiet < 3 && start.elapsed() < Duration::from_secs(2) {
            self.held.clear();
            self.reactor.turn(Some(Duration::from_millis(1))).expect("turn");
            let before = self.cov;
            for r in 0..REGS {
                self.drain(r);
            }
            let moved = self.cov.recv_bytes != before.recv_bytes
                || self.cov.buffer_bytes != before.buffer_bytes
                || self.cov.sends != before.sends
                || self.cov.timeouts != before.timeouts
                || self.cov.multishot_ends != before.multishot_ends;
            quiet = if moved { 0 } else { quiet + 1 };
        }
    }

    fn finish(mut self) -> Coverage {
        // Let every live op deliver what the sockets hold, then stop the
        // rest (nothing is pending now, so a cancel loses nothing).
        self.quiesce();
        while !self.live.is_empty() {
            let last = self.live.len() - 1;
            let tainted: Vec<bool> = self.sockets.iter().map(|s| s.tainted).collect();
            self.cancel(last);
            for (s, t) in self.sockets.iter_mut().zip(tainted) {
                s.tainted = t;
            }
        }
        self.held.clear();
        for s in 0..SOCKETS {
            self.peer_read(s);
            let sock = &mut self.sockets[s];
            let mut rest = Vec::new();
            let mut buf = [0; 4096];
            loop {
                match (&sock.ours).read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => rest.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("reading what is left failed: {e}"),
                }
            }
            if !sock.tainted {
                // Compared as multisets: ops on two registrations, drained
                // in either order, see a stream's bytes out of order.
                sock.received.extend_from_slice(&rest);
                sock.received.sort_unstable();
                let mut written = sock.written.clone();
                written.sort_unstable();
                assert!(
                    sock.received == written,
                    "socket {s}: received {} bytes ({:?}...), the peer wrote {} ({:?}...)",
                    sock.received.len(),
                    &sock.received[..sock.received.len().min(16)],
                    sock.written.len(),
                    &sock.written[..sock.written.len().min(16)],
                );
            }
            assert!(
                sock.sent <= sock.peer_read && sock.peer_read <= sock.sent + sock.maybe_sent,
                "socket {s}: the peer read {} bytes; sends reported {}, and cancelled ones held {}",
                sock.peer_read,
                sock.sent,
                sock.maybe_sent
            );
        }
        for r in 0..REGS {
            self.drop_reg(r);
        }
        let start = Instant::now();
        while self.reactor.metrics().ops_in_flight != 0 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "ops still in flight: {:?}",
                self.reactor.metrics()
            );
            self.reactor.turn(Some(Duration::from_millis(1))).expect("turn");
        }
        assert_eq!(self.reactor.metrics().registrations, 0, "registrations left");
        self.check_buffers_all_back();
        let cov = self.cov;
        drop(self);
        cov
    }

    /// Every provided buffer is back in the ring: a fresh multishot recv
    /// fills all of them (held, so none is recycled) with what the peer
    /// writes.
    fn check_buffers_all_back(&mut self) {
        let (ours, mut peer) = UnixStream::pair().expect("socketpair");
        let reg = self.reactor.register();
        let id = reg.submit(Op::recv_multi(ours.as_raw_fd(), self.group)).expect("submit");
        let want = usize::from(BUFS) * BUF_SIZE as usize;
        peer.write_all(&vec![1; want]).expect("the peer's write");
        let mut held = Vec::new();
        let mut got = 0;
        let start = Instant::now();
        let mut ended = false;
        while got < want && !ended && start.elapsed() < Duration::from_secs(2) {
            self.reactor.turn(Some(Duration::from_millis(1))).expect("turn");
            for packet in reg.try_drain() {
                let PacketKind::Completion(c) = packet.kind() else { continue };
                if let Some(buf) = reg.buffer(&c) {
                    got += buf.len();
                    held.push(buf);
                }
                ended |= !c.more();
            }
        }
        assert_eq!(
            got,
            want,
            "only {} of {BUFS} buffers came back to the ring ({} filled)",
            got / BUF_SIZE as usize,
            held.len()
        );
        drop(held);
        let _ = reg.cancel(id);
        drop(reg);
        let start = Instant::now();
        while self.reactor.metrics().ops_in_flight != 0 && start.elapsed() < Duration::from_secs(2)
        {
            self.reactor.turn(Some(Duration::from_millis(1))).expect("turn");
        }
    }
}
