//! The W4 echo client: a separate process (the `compare` binary re-run as
//! `compare --echo-client ADDR CONNS MSGS`), the same for every server.
//!
//! It opens `CONNS` TCP connections to `ADDR` (with `TCP_NODELAY`), then, on
//! one thread with a mio loop, keeps exactly one 1 KiB message in flight per
//! connection: send it, wait until all 1,024 bytes are echoed, send the
//! next, `MSGS` times per connection (a closed loop). It times the message
//! phase only, prints `elapsed_ns messages` on stdout, and closes every
//! connection, which is how the server knows the run is over.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Bytes per message.
pub const MSG: usize = 1024;

/// One client connection.
struct Conn {
    stream: TcpStream,
    /// Bytes of the current echo received so far.
    got: usize,
    /// Bytes of the current message not yet written.
    unsent: usize,
    /// Messages completed.
    done: u64,
}

/// Runs the client; returns the message phase's duration and message count.
///
/// # Errors
///
/// A connection fails, the server closes early, or nothing moves for 30 s.
pub fn run(addr: SocketAddr, conns: usize, msgs: u64) -> io::Result<(Duration, u64)> {
    let mut poll = Poll::new()?;
    let mut all = Vec::with_capacity(conns);
    for i in 0..conns {
        let std = std::net::TcpStream::connect(addr)?;
        std.set_nodelay(true)?;
        std.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std);
        poll.registry().register(&mut stream, Token(i), Interest::READABLE)?;
        all.push(Conn { stream, got: 0, unsent: 0, done: 0 });
    }
    let msg = [0xa5u8; MSG];
    let mut scratch = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    for (i, c) in all.iter_mut().enumerate() {
        c.unsent = MSG;
        flush(&mut poll, c, i, &msg)?;
    }
    let mut finished = 0;
    while finished < conns {
        crate::workloads::mio_poll(&mut poll, &mut events, Some(Duration::from_secs(30)))?;
        if events.is_empty() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "echo client: no progress in 30s"));
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut all[i];
            if ev.is_writable() {
                flush(&mut poll, c, i, &msg)?;
            }
            loop {
                match c.stream.read(&mut scratch) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "echo client: server closed early",
                        ));
                    }
                    Ok(k) => {
                        c.got += k;
                        while c.got >= MSG {
                            c.got -= MSG;
                            c.done += 1;
                            if c.done == msgs {
                                finished += 1;
                            } else {
                                c.unsent = MSG;
                                flush(&mut poll, c, i, &msg)?;
                            }
                        }
                        // A short read emptied the socket; the next byte
                        // brings a new edge.
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
    let elapsed = start.elapsed();
    Ok((elapsed, msgs * conns as u64))
}

/// Writes what is left of the current message; asks for `WRITABLE` only
/// when the socket buffer is full.
fn flush(poll: &mut Poll, c: &mut Conn, i: usize, msg: &[u8]) -> io::Result<()> {
    while c.unsent > 0 {
        match c.stream.write(&msg[MSG - c.unsent..]) {
            Ok(k) => c.unsent -= k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                poll.registry().reregister(
                    &mut c.stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The `--echo-client` entry point: parses `ADDR CONNS MSGS`, runs, and
/// prints `elapsed_ns messages`.
///
/// # Errors
///
/// Bad arguments, or as [`run`].
pub fn main(args: &[String]) -> io::Result<()> {
    client_main(args, "usage: --echo-client ADDR CONNS MSGS", run)
}

/// A load client process's entry point (W4's and W7's): parses `ADDR
/// CONNS COUNT` (`usage` is the error for bad ones), runs `run`, and
/// prints `elapsed_ns total`, the line
/// `workloads::echo`'s `client_process` reads.
pub(crate) fn client_main(
    args: &[String],
    usage: &str,
    run: fn(SocketAddr, usize, u64) -> io::Result<(Duration, u64)>,
) -> io::Result<()> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, usage.to_string());
    let [addr, conns, count] = args else { return Err(bad()) };
    let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
    let conns: usize = conns.parse().map_err(|_| bad())?;
    let count: u64 = count.parse().map_err(|_| bad())?;
    let (elapsed, total) = run(addr, conns, count)?;
    println!("{} {}", elapsed.as_nanos(), total);
    Ok(())
}
