//! W4 `echo`: a TCP echo server on loopback, 256 connections, 1 KiB
//! messages, closed loop. The client is a separate process, the same for
//! every server ([`crate::echo_client`]); it times the message phase, and
//! the throughput is messages echoed per second.
//!
//! On two cores the client process and the server share the CPU, and the
//! client's own cost bounds every server alike; so the server thread's CPU
//! time per message, from its last accept to its first close, is reported
//! too ("W4 echo server-cpu").
//!
//! Every server sets `TCP_NODELAY` on accepted sockets, reads into 4 KiB,
//! writes back what it read, and stops when all connections have closed.
//!
//! * **tally**: the tokio program below on `tally::LocalReactor`, with
//!   `tally::net::{TcpListener, TcpStream}` and the `futures-io` `read` and
//!   `write_all`.
//! * **tally-epoll**: the tally program on an executor whose reactor is
//!   built with `Backend::Epoll` (no reactor-only entry).
//! * **tally, reactor only** (its own entry, "W4 echo reactor-only"):
//!   `tally_reactor` driven by hand, one registration;
//!   a multishot `Op::accept_multi` on the listener; per connection, one
//!   operation in flight at a time, `Op::recv` then `Op::send` of what came
//!   in (resubmitting the rest of a short send), buffers recycled through
//!   `Registration::reclaim`. Completions are routed to connections by the
//!   op token's slab slot.
//! * **mio**: a `Poll` with the listener and every connection, edge-triggered
//!   `READABLE`; read until a short read or `WouldBlock`, write back at
//!   once, and queue what does not fit (then wait for `WRITABLE`).
//! * **tokio**: one spawned task per connection doing `read` + `write_all`
//!   on a `current_thread` runtime.
//! * **monoio**: the tokio program on a monoio runtime with its io_uring
//!   driver ([`monoio_runtime`]): one task per
//!   connection doing monoio's owned-buffer `read` + `write_all`, with one
//!   boxed 4 KiB buffer per connection that goes out with each operation
//!   and comes back with its result.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use tally_reactor::{Backend, Op, PacketList, Reactor};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Config, drain_into, monoio_runtime, tally_executor_on, tokio_runtime};
use crate::alloc;
use crate::harness::{Case, Engine, Run, Spec};
use crate::sys;

/// Client connections.
pub const CONNS: usize = 256;
/// The servers' read size.
pub(crate) const READ_SIZE: usize = 4096;
/// A server gives up on a run after this long.
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

/// The W4 spec. The count is messages: [`CONNS`] × messages per connection.
pub fn spec(cfg: Config) -> Spec {
    let per_conn = cfg.pick(300, 1000);
    Spec {
        name: "W4 echo".into(),
        unit: "msgs/s",
        count: per_conn * CONNS as u64,
        warmup: 20 * CONNS as u64,
        cases: vec![
            Case::new(Engine::Tally, |n| {
                with_client(n, |l, s| tally_executor(l, s, Backend::Auto))
            }),
            Case::new(Engine::TallyEpoll, |n| {
                with_client(n, |l, s| tally_executor(l, s, Backend::Epoll))
            }),
            Case::new(Engine::TallyReactor, |n| with_client(n, tally)),
            Case::new(Engine::Mio, |n| with_client(n, mio)),
            Case::new(Engine::Tokio, |n| with_client(n, tokio)),
            Case::new(Engine::Monoio, |n| with_client(n, monoio)),
            crate::tokio_on_tally::case("W4"),
        ],
    }
}

/// Allocation counts and the server's CPU time at the start and end of a
/// server's steady state: from the last accept to the first close.
///
/// A one-thread server runs on the thread that calls it, and its marks
/// read that thread's CPU clock ([`Steady::default`]). A server on several
/// threads ([`echo_mt`](super::echo_mt)) reads the process's CPU clock
/// ([`Steady::process`]): the client is another process, so the bench
/// process's CPU time is its server threads' (the calling thread waits
/// idle), and either mark may be taken on any of them.
#[derive(Debug, Default)]
pub(crate) struct Steady {
    begin: AtomicU64,
    end: AtomicU64,
    begin_cpu_ns: AtomicU64,
    end_cpu_ns: AtomicU64,
    /// Connections accepted so far, for [`Steady::accepted`].
    accepts: AtomicUsize,
    /// Whether the marks read the process's CPU clock.
    process: bool,
}

impl Steady {
    /// Marks that read the process's CPU clock (`CLOCK_PROCESS_CPUTIME_ID`).
    pub(crate) fn process() -> Steady {
        Steady { process: true, ..Steady::default() }
    }

    fn cpu_ns(&self) -> u64 {
        let t = if self.process { sys::process_cpu_time() } else { sys::thread_cpu_time() };
        t.as_nanos() as u64
    }

    pub(crate) fn begin(&self) {
        self.begin.store(alloc::allocations(), Ordering::Relaxed);
        self.begin_cpu_ns.store(self.cpu_ns(), Ordering::Relaxed);
    }

    /// Counts one accepted connection, from any thread; the [`CONNS`]th
    /// begins the steady state.
    pub(crate) fn accepted(&self) {
        if self.accepts.fetch_add(1, Ordering::Relaxed) + 1 == CONNS {
            self.begin();
        }
    }

    /// Whether all [`CONNS`] connections have been accepted.
    pub(crate) fn all_accepted(&self) -> bool {
        self.accepts.load(Ordering::Relaxed) >= CONNS
    }

    pub(crate) fn end(&self) {
        let now = alloc::allocations();
        if self.end.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.end_cpu_ns.store(self.cpu_ns(), Ordering::Relaxed);
        }
    }

    /// The server's CPU time in its steady state, if it got there.
    pub(crate) fn cpu(&self) -> Option<Duration> {
        let begin = self.begin_cpu_ns.load(Ordering::Relaxed);
        let end = self.end_cpu_ns.load(Ordering::Relaxed);
        (begin > 0 && end > begin).then(|| Duration::from_nanos(end - begin))
    }

    pub(crate) fn allocs(&self) -> u64 {
        let begin = self.begin.load(Ordering::Relaxed);
        let end = match self.end.load(Ordering::Relaxed) {
            0 => alloc::allocations(),
            e => e,
        };
        end.saturating_sub(begin)
    }
}

pub(crate) type Server = fn(TcpListener, Arc<Steady>) -> io::Result<()>;

/// Starts the client process against a fresh listener, runs `server` until
/// every connection has closed, and reads the client's timing.
pub(crate) fn with_client(messages: u64, server: Server) -> io::Result<Run> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    sys::set_backlog(listener.as_raw_fd(), 1024)?;
    let steady = Arc::new(Steady::default());
    with_client_on(messages, listener.local_addr()?, steady.clone(), || server(listener, steady))
}

/// Starts the client process against `addr`, where the server's listeners
/// already listen, runs `serve` until every connection has closed, and
/// reads the client's timing; `steady` is the marks `serve` takes.
pub(crate) fn with_client_on(
    messages: u64,
    addr: std::net::SocketAddr,
    steady: Arc<Steady>,
    serve: impl FnOnce() -> io::Result<()>,
) -> io::Result<Run> {
    let per_conn = (messages / CONNS as u64).max(1);
    client_process("--echo-client", "echo client", addr, CONNS, per_conn, &steady, serve)
}

/// Re-runs this binary as a load client (`FLAG ADDR CONNS PER_CONN`:
/// `--echo-client` for W4, `--http-client` for W7) against `addr`, runs
/// `serve` until every connection has closed, and reads the client's line,
/// `elapsed_ns events`; the server's CPU time and allocations come from
/// `steady`, the marks `serve` takes. `what` names the client in errors.
pub(crate) fn client_process(
    flag: &str,
    what: &str,
    addr: std::net::SocketAddr,
    conns: usize,
    per_conn: u64,
    steady: &Steady,
    serve: impl FnOnce() -> io::Result<()>,
) -> io::Result<Run> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([flag, &addr.to_string(), &conns.to_string(), &per_conn.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let served = serve();
    if served.is_err() {
        let _ = child.kill();
    }
    let out = child.wait_with_output()?;
    served?;
    if !out.status.success() {
        return Err(io::Error::other(format!("{what} exited with {}", out.status)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(ns)), Some(Ok(events))) = (words.next(), words.next()) else {
        return Err(io::Error::other(format!("{what} said {text:?}")));
    };
    let elapsed = Duration::from_nanos(ns);
    Ok(Run { events, elapsed, allocs: steady.allocs(), cpu: steady.cpu() })
}

pub(crate) fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "echo server: run did not finish in time")
}

/// What a tally operation is doing, by the op token's slab slot.
#[derive(Clone, Copy, Debug)]
enum Role {
    Free,
    Accept,
    Recv(usize),
    Send(usize),
}

fn tally(listener: TcpListener, steady: Arc<Steady>) -> io::Result<()> {
    let reactor = Reactor::builder().entries(1024).queue_cap(4 * CONNS).build()?;
    let reg = reactor.register();
    let lfd = listener.as_raw_fd();
    let mut roles: Vec<Role> = Vec::new();
    let set_role = |roles: &mut Vec<Role>, op: tally_reactor::OpId, role: Role| {
        let slot = op.slot() as usize;
        if roles.len() <= slot {
            roles.resize(slot + 1, Role::Free);
        }
        roles[slot] = role;
    };
    let accept = reg.submit(Op::accept_multi(lfd))?;
    set_role(&mut roles, accept, Role::Accept);
    let mut fds: Vec<Option<OwnedFd>> = Vec::with_capacity(CONNS);
    let (mut accepted, mut closed) = (0, 0);
    let mut list = PacketList::new();
    let deadline = Instant::now() + DEADLINE;
    while closed < CONNS {
        if Instant::now() > deadline {
            return Err(timed_out());
        }
        reactor.turn(Some(Duration::from_secs(1)))?;
        drain_into(&reg, &mut list);
        for p in &list {
            let Some(c) = p.as_completion() else { continue };
            let op = c.op();
            let role = roles.get(op.slot() as usize).copied().unwrap_or(Role::Free);
            match role {
                Role::Free => {}
                Role::Accept => {
                    if c.result < 0 {
                        return Err(io::Error::from_raw_os_error(-c.result));
                    }
                    let Some(fd) = reg.take_fd(&c) else { continue };
                    sys::set_nodelay(fd.as_raw_fd())?;
                    let i = fds.len();
                    let recv =
                        reg.submit(Op::recv(fd.as_raw_fd(), Vec::with_capacity(READ_SIZE), 0))?;
                    set_role(&mut roles, recv, Role::Recv(i));
                    fds.push(Some(fd));
                    accepted += 1;
                    if accepted == CONNS {
                        steady.begin();
                    }
                    if !c.more() && accepted < CONNS {
                        let again = reg.submit(Op::accept_multi(lfd))?;
                        set_role(&mut roles, again, Role::Accept);
                    }
                }
                Role::Recv(i) => {
                    let buf = reg.reclaim(op).unwrap_or_default();
                    let Some(fd) = fds[i].as_ref().map(AsRawFd::as_raw_fd) else { continue };
                    if c.result > 0 {
                        let send = reg.submit(Op::send(fd, buf, 0))?;
                        set_role(&mut roles, send, Role::Send(i));
                    } else {
                        // EOF (or a reset): the client is done with it.
                        fds[i] = None;
                        closed += 1;
                        steady.end();
                    }
                }
                Role::Send(i) => {
                    let mut buf = reg.reclaim(op).unwrap_or_default();
                    let Some(fd) = fds[i].as_ref().map(AsRawFd::as_raw_fd) else { continue };
                    if c.result < 0 {
                        fds[i] = None;
                        closed += 1;
                        continue;
                    }
                    let next = if (c.result as usize) < buf.len() {
                        buf.drain(..c.result as usize);
                        let send = reg.submit(Op::send(fd, buf, 0))?;
                        (send, Role::Send(i))
                    } else {
                        buf.clear();
                        (reg.submit(Op::recv(fd, buf, 0))?, Role::Recv(i))
                    };
                    set_role(&mut roles, next.0, next.1);
                }
            }
        }
        list.clear();
    }
    let _ = reg.cancel(accept);
    Ok(())
}

/// One mio server connection.
struct MioConn {
    stream: mio::net::TcpStream,
    /// Echo bytes that did not fit in the socket buffer yet.
    pending: Vec<u8>,
}

fn mio(listener: TcpListener, steady: Arc<Steady>) -> io::Result<()> {
    const LISTENER: Token = Token(usize::MAX);
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<MioConn>> = Vec::with_capacity(CONNS);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_SIZE];
    let (mut accepted, mut closed) = (0, 0);
    let deadline = Instant::now() + DEADLINE;
    while closed < CONNS {
        if Instant::now() > deadline {
            return Err(timed_out());
        }
        crate::workloads::mio_poll(&mut poll, &mut events, Some(Duration::from_secs(1)))?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nodelay(true)?;
                            let token = Token(conns.len());
                            poll.registry().register(&mut stream, token, Interest::READABLE)?;
                            conns.push(Some(MioConn { stream, pending: Vec::new() }));
                            accepted += 1;
                            if accepted == CONNS {
                                steady.begin();
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let i = ev.token().0;
            let Some(c) = conns[i].as_mut() else { continue };
            if ev.is_writable() && !c.pending.is_empty() {
                match c.stream.write(&c.pending) {
                    Ok(k) => drop(c.pending.drain(..k)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            let mut eof = false;
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(k) => {
                        let mut written = 0;
                        if c.pending.is_empty() {
                            match c.stream.write(&buf[..k]) {
                                Ok(w) => written = w,
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                                Err(e) => return Err(e),
                            }
                        }
                        if written < k {
                            if c.pending.is_empty() {
                                poll.registry().reregister(
                                    &mut c.stream,
                                    ev.token(),
                                    Interest::READABLE | Interest::WRITABLE,
                                )?;
                            }
                            c.pending.extend_from_slice(&buf[written..k]);
                        }
                        // A short read emptied the socket; the next byte
                        // brings a new edge (tokio skips the EAGAIN read too).
                        if k < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                        eof = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if eof {
                conns[i] = None;
                closed += 1;
                steady.end();
            }
        }
    }
    Ok(())
}

/// The tokio server; `tokio-on-tally` runs it too, on compat-mio.
pub(crate) fn tokio(listener: TcpListener, steady: Arc<Steady>) -> io::Result<()> {
    let rt = tokio_runtime()?;
    rt.block_on(async {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let serve = async {
            let mut tasks = Vec::with_capacity(CONNS);
            for _ in 0..CONNS {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let steady = steady.clone();
                tasks.push(tokio::spawn(async move {
                    tokio_conn(stream).await;
                    steady.end();
                }));
            }
            steady.begin();
            for t in tasks {
                t.await.map_err(io::Error::other)?;
            }
            Ok::<(), io::Error>(())
        };
        tokio::time::timeout(DEADLINE, serve).await.map_err(|_| timed_out())?
    })
}

fn monoio(listener: TcpListener, steady: Arc<Steady>) -> io::Result<()> {
    let mut rt = monoio_runtime()?;
    rt.block_on(async {
        listener.set_nonblocking(true)?;
        let listener = monoio::net::TcpListener::from_std(listener)?;
        let serve = async {
            let mut tasks = Vec::with_capacity(CONNS);
            for _ in 0..CONNS {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let steady = steady.clone();
                tasks.push(monoio::spawn(async move {
                    monoio_conn(stream).await;
                    steady.end();
                }));
            }
            steady.begin();
            for t in tasks {
                t.await;
            }
            Ok::<(), io::Error>(())
        };
        monoio::time::timeout(DEADLINE, serve).await.map_err(|_| timed_out())?
    })
}

fn tally_executor(listener: TcpListener, steady: Arc<Steady>, backend: Backend) -> io::Result<()> {
    let rt = tally_executor_on(backend)?;
    rt.block_on(async {
        listener.set_nonblocking(true)?;
        let listener = tally::net::TcpListener::from_std(listener);
        let serve = async {
            let mut tasks = Vec::with_capacity(CONNS);
            for _ in 0..CONNS {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let steady = steady.clone();
                tasks.push(tally::spawn(async move {
                    tally_conn(stream).await;
                    steady.end();
                }));
            }
            steady.begin();
            for t in tasks {
                t.await.map_err(io::Error::other)?;
            }
            Ok::<(), io::Error>(())
        };
        tally::time::timeout(DEADLINE, serve).await.map_err(|_| timed_out())?
    })
}

/// W4's connection loop, as every server below runs it on its engine: read
/// into [`READ_SIZE`] bytes, write back what came, until EOF or an error.
pub(crate) async fn tally_conn(mut stream: tally::net::TcpStream) {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = [0u8; READ_SIZE];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                if stream.write_all(&buf[..k]).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// [`tally_conn`] on tokio.
pub(crate) async fn tokio_conn(mut stream: tokio::net::TcpStream) {
    let mut buf = [0u8; READ_SIZE];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                if stream.write_all(&buf[..k]).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// [`tally_conn`] on monoio, with monoio's owned buffers: one boxed buffer
/// per connection goes out with each operation and comes back with its
/// result.
pub(crate) async fn monoio_conn(mut stream: monoio::net::TcpStream) {
    use monoio::buf::IoBuf as _;
    use monoio::io::{AsyncReadRent as _, AsyncWriteRentExt as _};
    let mut buf: Box<[u8]> = vec![0u8; READ_SIZE].into_boxed_slice();
    loop {
        let (r, back) = stream.read(buf).await;
        let k = match r {
            Ok(0) | Err(_) => break,
            Ok(k) => k,
        };
        let (r, back) = stream.write_all(back.slice(..k)).await;
        buf = back.into_inner();
        if r.is_err() {
            break;
        }
    }
}
