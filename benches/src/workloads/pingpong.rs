//! W3 `pingpong`: one Unix socketpair, 64-byte messages bounced between its
//! two ends on one thread, bounded by message count. Throughput is messages
//! delivered (one way) per second; a round trip is two messages.
//!
//! * **tally**: the tokio program below on `tally::LocalReactor`, with
//!   `tally::net::UnixStream` and the `futures-io` `read_exact` and
//!   `write_all`.
//! * **tally-epoll**: the tally program on an executor whose reactor is
//!   built with `Backend::Epoll`.
//! * **tally, reactor only** (its own entry, "W3 pingpong reactor-only"):
//!   `tally_reactor` driven by hand, one registration; each end keeps one
//!   `Op::recv` in flight, and a received message makes that end `Op::send`
//!   one back. Buffers go out with each operation and come back through
//!   `Registration::reclaim`, so nothing is allocated per message. One
//!   `turn` and one drain per crank. The same loop on a reactor built with
//!   `Backend::Epoll` stands in that entry as `tally-epoll`: the reactor's
//!   own layer over epoll, against mio's, with no executor above it.
//! * **mio**: both ends registered `READABLE` (edge-triggered) with one
//!   `Poll`; on an event, `read(2)` into 4 KiB until a short read or
//!   `WouldBlock`, and `write(2)` a reply for each whole message.
//! * **tokio**: a spawned task echoes on one end with `read_exact` +
//!   `write_all`; the driving task does `write_all` + `read_exact` on the
//!   other, all on a `current_thread` runtime.
//! * **monoio**: the same two tasks on a monoio runtime with its io_uring
//!   driver ([`monoio_runtime`]), with monoio's
//!   owned-buffer `read_exact` and `write_all`: each end keeps one boxed
//!   64-byte buffer that goes out with every operation and comes back with
//!   its result, so nothing is allocated per message by the program.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use tally_reactor::{Backend, Op, OpId, PacketList, Registration};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{
    Config, drain_into, monoio_runtime, tally_executor_on, tally_reactor_on, tokio_runtime,
};
use crate::harness::{Case, Engine, Run, Spec, Window};

/// Bytes per message.
pub const MSG: usize = 64;

/// The W3 spec. The count is messages delivered (two per round trip).
pub fn spec(cfg: Config) -> Spec {
    let count = cfg.pick(200_000, 1_000_000);
    Spec {
        name: "W3 pingpong".into(),
        unit: "msgs/s",
        count,
        warmup: count / 10,
        cases: vec![
            Case::new(Engine::Tally, |n| tally_executor(n, Backend::Auto)),
            Case::new(Engine::TallyEpoll, |n| tally_executor(n, Backend::Epoll)),
            Case::new(Engine::TallyReactor, |n| reactor_pairs(1, n, Backend::Auto)),
            Case::new(Engine::TallyReactorEpoll, |n| reactor_pairs(1, n, Backend::Epoll)),
            Case::new(Engine::Mio, mio),
            Case::new(Engine::Tokio, tokio),
            Case::new(Engine::Monoio, monoio),
            crate::tokio_on_tally::case("W3"),
        ],
    }
}

/// One end of the pair, as the tally loop drives it.
struct End {
    fd: RawFd,
    /// The receive buffer, when no recv holds it; `len` bytes of the
    /// current message are in.
    recv_buf: Option<Vec<u8>>,
    send_buf: Option<Vec<u8>>,
    recv_op: Option<OpId>,
    send_op: Option<OpId>,
    /// Messages this end must still send.
    owed: u32,
}

impl End {
    fn new(fd: RawFd) -> End {
        End {
            fd,
            recv_buf: Some(Vec::with_capacity(MSG)),
            send_buf: Some(vec![0x5a; MSG]),
            recv_op: None,
            send_op: None,
            owed: 0,
        }
    }

    /// Submits what this end can: a recv if none is in flight, a send if
    /// one is owed and the send buffer is home.
    fn pump(&mut self, reg: &Registration) -> io::Result<()> {
        if self.recv_op.is_none() {
            if let Some(buf) = self.recv_buf.take() {
                self.recv_op = Some(reg.submit(Op::recv(self.fd, buf, 0))?);
            }
        }
        if self.owed > 0 && self.send_op.is_none() {
            if let Some(buf) = self.send_buf.take() {
                self.send_op = Some(reg.submit(Op::send(self.fd, buf, 0))?);
                self.owed -= 1;
            }
        }
        Ok(())
    }
}

fn reclaimed(reg: &Registration, op: OpId) -> io::Result<Vec<u8>> {
    reg.reclaim(op).ok_or_else(|| io::Error::other("a finished op gave no buffer back"))
}

/// One socketpair of the hand-driven reactor loop, with its own
/// registration, so that a completion is matched against two ends only.
struct Pair {
    /// Kept open for the run.
    _socks: (UnixStream, UnixStream),
    reg: Registration,
    ends: [End; 2],
}

/// The reactor-only case over `pairs` socketpairs at once, each with one
/// message in flight, until `n` messages are delivered in all: W3 with
/// `pairs = 1`, W3-many with more. One `turn` per crank, then a drain of
/// every pair's registration.
pub(crate) fn reactor_pairs(pairs: usize, n: u64, backend: Backend) -> io::Result<Run> {
    let reactor = tally_reactor_on(backend)?;
    let mut all = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let (a, b) = UnixStream::pair()?;
        let ends = [End::new(a.as_raw_fd()), End::new(b.as_raw_fd())];
        all.push(Pair { _socks: (a, b), reg: reactor.register(), ends });
    }
    let mut sent = 0u64;
    for pair in &mut all {
        if sent < n {
            pair.ends[0].owed = 1;
            sent += 1;
        }
    }
    let mut delivered = 0u64;
    let mut list = PacketList::new();
    let window = Window::open();
    while delivered < n {
        for pair in &mut all {
            for end in &mut pair.ends {
                end.pump(&pair.reg)?;
            }
        }
        reactor.turn(Some(Duration::from_secs(5)))?;
        for pair in &mut all {
            drain_into(&pair.reg, &mut list);
            for p in &list {
                let Some(c) = p.as_completion() else { continue };
                let op = c.op();
                let reg = &pair.reg;
                let Some(end) =
                    pair.ends.iter_mut().find(|e| e.recv_op == Some(op) || e.send_op == Some(op))
                else {
                    continue;
                };
                if c.result < 0 {
                    return Err(io::Error::from_raw_os_error(-c.result));
                }
                if end.recv_op == Some(op) {
                    end.recv_op = None;
                    let mut buf = reclaimed(reg, op)?;
                    if c.result == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    if buf.len() == MSG {
                        buf.clear();
                        delivered += 1;
                        if sent < n {
                            end.owed += 1;
                            sent += 1;
                        }
                    }
                    end.recv_buf = Some(buf);
                } else {
                    end.send_op = None;
                    let buf = reclaimed(reg, op)?;
                    if c.result as usize != MSG {
                        return Err(io::Error::other(format!("short send: {}", c.result)));
                    }
                    end.send_buf = Some(buf);
                }
            }
            list.clear();
        }
    }
    let run = window.close(delivered);
    drop(all);
    drop(reactor);
    Ok(run)
}

fn mio(n: u64) -> io::Result<Run> {
    mio_pairs(1, n)
}

/// The mio case over `pairs` socketpairs at once, each with one message in
/// flight, until `n` messages are delivered in all: every end registered
/// with one `Poll`, the same read loop for each event.
pub(crate) fn mio_pairs(pairs: usize, n: u64) -> io::Result<Run> {
    let mut ends = Vec::with_capacity(2 * pairs);
    for _ in 0..pairs {
        let (a, b) = mio::net::UnixStream::pair()?;
        ends.push(a);
        ends.push(b);
    }
    let mut poll = Poll::new()?;
    for (i, end) in ends.iter_mut().enumerate() {
        poll.registry().register(end, Token(i), Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(16.max(2 * pairs));
    let msg = [0x5au8; MSG];
    let mut scratch = [0u8; 4096];
    let mut got = vec![0usize; 2 * pairs];
    let window = Window::open();
    let mut sent = 0u64;
    for end in ends.iter_mut().step_by(2) {
        if sent < n {
            end.write_all(&msg)?;
            sent += 1;
        }
    }
    let mut delivered = 0u64;
    while delivered < n {
        crate::workloads::mio_poll(&mut poll, &mut events, Some(Duration::from_secs(5)))?;
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                match ends[i].read(&mut scratch) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(k) => {
                        got[i] += k;
                        while got[i] >= MSG {
                            got[i] -= MSG;
                            delivered += 1;
                            if sent < n {
                                ends[i].write_all(&msg)?;
                                sent += 1;
                            }
                        }
                        // A short read emptied the socket: the next byte
                        // brings a new edge, so skip the read that would
                        // only say EAGAIN (as tokio does).
                        if k < scratch.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(window.close(delivered))
}

/// The tokio case; `tokio-on-tally` runs it too, on compat-mio.
pub(crate) fn tokio(n: u64) -> io::Result<Run> {
    let rt = tokio_runtime()?;
    rt.block_on(async {
        let (a, b) = tokio::net::UnixStream::pair()?;
        let echo = tokio::spawn(tokio_echo(b));
        let window = Window::open();
        let rounds = tokio_drive(a, n / 2).await?;
        let run = window.close(rounds * 2);
        let _ = echo.await;
        Ok(run)
    })
}

/// Echoes 64-byte messages on `b` (tokio) until the peer closes.
pub(crate) async fn tokio_echo(mut b: tokio::net::UnixStream) {
    let mut buf = [0u8; MSG];
    while b.read_exact(&mut buf).await.is_ok() {
        if b.write_all(&buf).await.is_err() {
            break;
        }
    }
}

/// Does `rounds` round trips on `a` (tokio), then closes it; returns
/// `rounds`.
pub(crate) async fn tokio_drive(mut a: tokio::net::UnixStream, rounds: u64) -> io::Result<u64> {
    let msg = [0x5au8; MSG];
    let mut buf = [0u8; MSG];
    for _ in 0..rounds {
        a.write_all(&msg).await?;
        a.read_exact(&mut buf).await?;
    }
    Ok(rounds)
}

fn monoio(n: u64) -> io::Result<Run> {
    let mut rt = monoio_runtime()?;
    rt.block_on(async {
        let (a, b) = monoio::net::UnixStream::pair()?;
        let echo = monoio::spawn(monoio_echo(b));
        let window = Window::open();
        let rounds = monoio_drive(a, n / 2).await?;
        let run = window.close(rounds * 2);
        echo.await;
        Ok(run)
    })
}

/// Echoes 64-byte messages on `b` (monoio, one owned buffer) until the
/// peer closes.
pub(crate) async fn monoio_echo(mut b: monoio::net::UnixStream) {
    use monoio::io::{AsyncReadRentExt as _, AsyncWriteRentExt as _};
    let mut buf: Box<[u8]> = vec![0u8; MSG].into_boxed_slice();
    loop {
        let (r, back) = b.read_exact(buf).await;
        if r.is_err() {
            break;
        }
        let (r, back) = b.write_all(back).await;
        buf = back;
        if r.is_err() {
            break;
        }
    }
}

/// Does `rounds` round trips on `a` (monoio, two owned buffers), then
/// closes it; returns `rounds`.
pub(crate) async fn monoio_drive(mut a: monoio::net::UnixStream, rounds: u64) -> io::Result<u64> {
    use monoio::io::{AsyncReadRentExt as _, AsyncWriteRentExt as _};
    let mut msg: Box<[u8]> = vec![0x5au8; MSG].into_boxed_slice();
    let mut buf: Box<[u8]> = vec![0u8; MSG].into_boxed_slice();
    for _ in 0..rounds {
        let (r, back) = a.write_all(msg).await;
        msg = back;
        r?;
        let (r, back) = a.read_exact(buf).await;
        buf = back;
        r?;
    }
    Ok(rounds)
}

fn tally_executor(n: u64, backend: Backend) -> io::Result<Run> {
    let rt = tally_executor_on(backend)?;
    rt.block_on(async {
        let (a, b) = tally::net::UnixStream::pair()?;
        let echo = tally::spawn(tally_echo(b));
        let window = Window::open();
        let rounds = tally_drive(a, n / 2).await?;
        let run = window.close(rounds * 2);
        let _ = echo.await;
        Ok(run)
    })
}

/// Echoes 64-byte messages on `b` (tally) until the peer closes.
pub(crate) async fn tally_echo(mut b: tally::net::UnixStream) {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = [0u8; MSG];
    while b.read_exact(&mut buf).await.is_ok() {
        if b.write_all(&buf).await.is_err() {
            break;
        }
    }
}

/// Does `rounds` round trips on `a` (tally), then closes it; returns
/// `rounds`.
pub(crate) async fn tally_drive(mut a: tally::net::UnixStream, rounds: u64) -> io::Result<u64> {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    let msg = [0x5au8; MSG];
    let mut buf = [0u8; MSG];
    for _ in 0..rounds {
        a.write_all(&msg).await?;
        a.read_exact(&mut buf).await?;
    }
    Ok(rounds)
}
