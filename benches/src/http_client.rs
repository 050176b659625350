//! The W7 http client: a separate process (the `compare` binary re-run as
//! `compare --http-client ADDR CONNS REQS`), the same for every server.
//!
//! It opens `CONNS` keep-alive HTTP/1.1 connections to `ADDR` (with
//! `TCP_NODELAY`), split over [`THREADS`] std threads with blocking
//! sockets. Each thread runs in rounds: it writes one `GET /` on each of its
//! connections, then reads each connection's response, parsing
//! `Content-Length` and checking the status and the body, so every
//! connection has one request in flight at a time (a closed loop), `REQS`
//! times per connection. It times the request phase only (all connections
//! open before it starts), prints `elapsed_ns requests` on stdout, and
//! closes every connection, which is how the server knows the run is over.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Client threads; the connections are split between them.
pub const THREADS: usize = 2;
/// The request every connection sends.
pub const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
/// The body every server answers with.
pub const BODY: &[u8] = b"Hello, world!\n";
/// How long the client waits for any one read before it gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection and the bytes received on it and not yet parsed.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    pos: usize,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("http client: {msg}"))
}

impl Conn {
    fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(Conn { stream, buf: Vec::with_capacity(4096), pos: 0 })
    }

    /// Reads until one whole response is buffered, checks it, and
    /// consumes it.
    fn read_response(&mut self) -> io::Result<()> {
        loop {
            if let Some(len) = self.parse()? {
                self.pos += len;
                if self.pos == self.buf.len() {
                    self.buf.clear();
                    self.pos = 0;
                }
                return Ok(());
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let have = self.buf.len();
            self.buf.resize(have + 4096, 0);
            let n = match self.stream.read(&mut self.buf[have..]) {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e);
                }
            };
            self.buf.truncate(have + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "http client: the server closed a connection early",
                ));
            }
        }
    }

    /// The length of the whole response at `pos`, once it is all here.
    fn parse(&self) -> io::Result<Option<usize>> {
        let data = &self.buf[self.pos..];
        let Some(head_end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = std::str::from_utf8(&data[..head_end])
            .map_err(|_| bad("a response head is not UTF-8".into()))?;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 200 ") {
            return Err(bad(format!("status {status:?}")));
        }
        let length = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .ok_or_else(|| bad(format!("no content-length in {head:?}")))?;
        let body_start = head_end + 4;
        if data.len() < body_start + length {
            return Ok(None);
        }
        let body = &data[body_start..body_start + length];
        if body != BODY {
            return Err(bad(format!("body {:?}", String::from_utf8_lossy(body))));
        }
        Ok(Some(body_start + length))
    }
}

/// One thread's rounds over its connections.
fn rounds(conns: &mut [Conn], reqs: u64) -> io::Result<()> {
    for _ in 0..reqs {
        for c in conns.iter_mut() {
            c.stream.write_all(REQUEST)?;
        }
        for c in conns.iter_mut() {
            c.read_response()?;
        }
    }
    Ok(())
}

/// Runs the client; returns the request phase's duration and request count.
///
/// # Errors
///
/// A connection fails, a response is wrong, the server closes early, or a
/// read waits for more than 30 s.
pub fn run(addr: SocketAddr, conns: usize, reqs: u64) -> io::Result<(Duration, u64)> {
    let threads = THREADS.min(conns).max(1);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let mine = conns / threads + usize::from(t < conns % threads);
        let barrier = barrier.clone();
        handles.push(thread::spawn(move || -> io::Result<()> {
            let opened: io::Result<Vec<Conn>> = (0..mine).map(|_| Conn::open(addr)).collect();
            // Wait for the others even on failure, so none is left behind.
            barrier.wait();
            let mut opened = opened?;
            rounds(&mut opened, reqs)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut result = Ok(());
    for h in handles {
        let r = h.join().unwrap_or_else(|_| Err(io::Error::other("http client thread panicked")));
        result = result.and(r);
    }
    let elapsed = start.elapsed();
    result?;
    Ok((elapsed, reqs * conns as u64))
}

/// The `--http-client` entry point: parses `ADDR CONNS REQS`, runs, and
/// prints `elapsed_ns requests`.
///
/// # Errors
///
/// Bad arguments, or as [`run`].
pub fn main(args: &[String]) -> io::Result<()> {
    crate::echo_client::client_main(args, "usage: --http-client ADDR CONNS REQS", run)
}
