//! With the `hyper` feature: hyper's HTTP/1 server on a `LocalReactor`,
//! loaded by plain std clients over loopback.
//!
//! * 10,000 keep-alive requests on one connection, pipelined in batches,
//!   every body checked;
//! * clients that close half-way through a request head, or through a
//!   request body, or reset the connection, do not stop the server: a
//!   later client is served;
//! * hyper's header read timeout, on tally's timers (`LocalTimer`), closes
//!   a connection whose head never ends;
//! * a `UnixStream` serves hyper as a `TcpStream` does;
//! * `LocalTimer`'s sleeps end on time and reset in place; a `LocalSleep`
//!   polled off its thread panics, and one dropped off its thread is leaked
//!   quietly; `LocalExec` runs a `!Send` future;
//! * hyper's flush does not wait for a send in flight (shutdown does), so
//!   64 keep-alive clients that close right after their last response end
//!   their connections cleanly.
//!
//! Run with `cargo test -p tally --features hyper --test hyper` (and again
//! with `TALLY_BACKEND=epoll`).

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tally::LocalReactor;
use tally::hyper::LocalTimer;
use tally::net::TcpListener;

/// Requests in the keep-alive test.
const REQUESTS: usize = 10_000;
/// Requests written before their responses are read.
const BATCH: usize = 16;
/// How long a client waits for any one read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A GET answers `hello <path>`; a POST answers `got <n>` with the length
/// of the body it read whole.
async fn service(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = if req.method() == hyper::Method::POST {
        let n = req.into_body().collect().await?.to_bytes().len();
        format!("got {n}")
    } else {
        format!("hello {}", req.uri().path())
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// A server on its own thread and `LocalReactor`, until `stop`.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl Server {
    /// Starts one on 127.0.0.1:0, with hyper's header read timeout at
    /// `header_timeout` on tally's timers.
    fn start(header_timeout: Duration) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let rt = LocalReactor::new().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let mut accepted = 0;
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    if stopping.load(Ordering::Acquire) {
                        return accepted;
                    }
                    accepted += 1;
                    // Pipelined answers go out as they are made; Nagle
                    // would hold each one back for the client's delayed ACK.
                    stream.set_nodelay(true).unwrap();
                    tally::spawn(async move {
                        // Errors (a peer gone mid-request) end only this
                        // connection.
                        let _ = http1::Builder::new()
                            .timer(LocalTimer)
                            .header_read_timeout(header_timeout)
                            .serve_connection(stream, service_fn(service))
                            .await;
                    });
                }
            })
        });
        let addr = rx.recv_timeout(READ_TIMEOUT).expect("the server thread did not start");
        Server { addr, stop, thread: Some(thread) }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Stops the accept loop (one last connection wakes it) and returns how
    /// many connections it accepted.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Release);
        drop(TcpStream::connect(self.addr).unwrap());
        self.thread.take().unwrap().join().expect("the server thread panicked")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            let _ = TcpStream::connect(self.addr);
            if !thread::panicking() {
                thread.join().expect("the server thread panicked");
            }
        }
    }
}

/// Reads one response: its status code and body (Content-Length framed).
fn read_response(r: &mut impl BufRead) -> io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no status line"));
    }
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("status {line:?}")))?;
    let mut length = None;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "headers cut short"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let length =
        length.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no content-length"))?;
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    Ok((status, body))
}

/// Sends one GET on a fresh connection and checks the answer.
fn get_once(server: &Server, path: &str) {
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    write!(w, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (status, body) = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!((status, body), (200, format!("hello {path}").into_bytes()));
}

#[test]
fn ten_thousand_keep_alive_requests_on_one_connection() {
    let server = Server::start(Duration::from_secs(30));
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let start = Instant::now();
    let mut sent = 0;
    while sent < REQUESTS {
        let batch = BATCH.min(REQUESTS - sent);
        let mut out = Vec::new();
        for i in sent..sent + batch {
            write!(out, "GET /r{i} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        }
        w.write_all(&out).unwrap();
        for i in sent..sent + batch {
            let (status, body) = read_response(&mut r).unwrap();
            assert_eq!(status, 200, "request {i}");
            assert_eq!(body, format!("hello /r{i}").into_bytes(), "request {i}");
        }
        sent += batch;
        assert!(
            start.elapsed() < util::BUDGET,
            "{sent} requests took longer than {:?}",
            util::BUDGET
        );
    }
    // A POST with a body on the same connection, read whole by the service.
    w.write_all(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n").unwrap();
    w.write_all(&[b'x'; 5000]).unwrap();
    assert_eq!(read_response(&mut r).unwrap(), (200, b"got 5000".to_vec()));
    drop((w, r));
    assert_eq!(server.stop(), 1, "every request came on the one connection");
}

#[test]
fn clients_gone_mid_request_do_not_stop_the_server() {
    let server = Server::start(Duration::from_secs(30));
    get_once(&server, "/before");
    // Half a request head, then close.
    {
        let mut s = server.connect();
        s.write_all(b"GET /half HTTP/1.1\r\nHo").unwrap();
    }
    // A whole head announcing a body, half the body, then close.
    {
        let mut s = server.connect();
        s.write_all(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n").unwrap();
        s.write_all(&[b'y'; 400]).unwrap();
    }
    // Half a body, then a reset (RST, not FIN).
    {
        let mut s = server.connect();
        s.write_all(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n").unwrap();
        s.write_all(&[b'z'; 10]).unwrap();
        util::linger_zero(std::os::fd::AsRawFd::as_raw_fd(&s));
    }
    // A request whose answer is never read: the client closes at once.
    {
        let mut s = server.connect();
        s.write_all(b"GET /unread HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    }
    // Garbage instead of HTTP.
    {
        let mut s = server.connect();
        s.write_all(b"\x00\x01not http at all\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        // hyper answers 400 or just closes; either way the read ends.
        let _ = s.read_to_end(&mut rest);
    }
    for i in 0..20 {
        get_once(&server, &format!("/after{i}"));
    }
    // A keep-alive connection still works across all that, too.
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for i in 0..100 {
        write!(w, "GET /k{i} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut r).unwrap(), (200, format!("hello /k{i}").into_bytes()));
    }
    drop((w, r));
    // 27 connections, less the reset one if it was reset before its accept
    // (the accept then fails with ECONNABORTED, which tally skips).
    let accepted = server.stop();
    assert!((26..=27).contains(&accepted), "{accepted} connections accepted");
}

#[test]
fn header_read_timeout_on_tally_timers_closes_a_stalled_connection() {
    let server = Server::start(Duration::from_millis(200));
    let mut s = server.connect();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n").unwrap();
    let start = Instant::now();
    let mut rest = Vec::new();
    // The server closes it (hyper may answer 408 first).
    s.read_to_end(&mut rest).expect("the server should close the stalled connection");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(150), "closed after {waited:?}, before the timeout");
    assert!(waited < Duration::from_secs(5), "closed only after {waited:?}");
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    // A connection that keeps its requests coming is not cut.
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for i in 0..5 {
        write!(w, "GET /t{i} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut r).unwrap(), (200, format!("hello /t{i}").into_bytes()));
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_unix_stream_serves_hyper() {
    let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    theirs.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let client = thread::spawn(move || {
        let mut w = theirs.try_clone().unwrap();
        let mut r = BufReader::new(theirs);
        for i in 0..1_000 {
            write!(w, "GET /u{i} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            assert_eq!(read_response(&mut r).unwrap(), (200, format!("hello /u{i}").into_bytes()));
        }
    });
    let rt = LocalReactor::new().unwrap();
    util::bounded(&rt, "hyper over a UnixStream", async move {
        let stream = tally::net::UnixStream::from_std(mine);
        // The client's close ends the connection cleanly.
        http1::Builder::new()
            .timer(LocalTimer)
            .serve_connection(stream, service_fn(service))
            .await
            .unwrap();
    });
    client.join().unwrap();
}

#[test]
fn local_exec_spawns_on_the_executor() {
    use hyper::rt::Executor;
    let rt = LocalReactor::new().unwrap();
    let ran = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = ran.clone();
    util::bounded(&rt, "a future given to LocalExec", async move {
        // Not `Send`: an `Rc` inside, as a `LocalReactor` allows.
        tally::hyper::LocalExec.execute(async move { seen.set(seen.get() + 1) });
        while ran.get() == 0 {
            tally::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

#[test]
fn local_timer_sleeps_on_tally_timers_and_resets_in_place() {
    use hyper::rt::Timer;
    let rt = LocalReactor::new().unwrap();
    util::bounded(&rt, "LocalTimer's sleeps", async {
        let start = Instant::now();
        LocalTimer.sleep(Duration::from_millis(30)).await;
        assert!(start.elapsed() >= Duration::from_millis(30), "woke after {:?}", start.elapsed());
        // An hour's sleep reset to 20 ms from now ends in about 20 ms, and
        // is still the same `LocalSleep` (reset in place, not replaced).
        let mut sleep = LocalTimer.sleep(Duration::from_secs(3600));
        let deadline = Instant::now() + Duration::from_millis(20);
        LocalTimer.reset(&mut sleep, deadline);
        let mine = sleep.as_mut().downcast_mut_pin::<tally::hyper::LocalSleep>();
        assert_eq!(mine.expect("a LocalSleep").deadline(), deadline);
        sleep.await;
        assert!(Instant::now() >= deadline);
        assert!(LocalTimer.now() >= deadline);
    });
}

#[test]
fn a_local_sleep_off_its_thread_panics_when_polled_and_leaks_when_dropped() {
    use hyper::rt::Timer;
    let rt = LocalReactor::new().unwrap();
    let (a, b) = rt.block_on(async {
        (LocalTimer.sleep(Duration::from_secs(1)), LocalTimer.sleep(Duration::from_secs(1)))
    });
    let polled = thread::spawn(move || {
        let mut a = a;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = a.as_mut().poll(&mut cx);
    })
    .join();
    let msg = polled.expect_err("polling a LocalSleep off its thread should panic");
    let msg = msg
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| msg.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("");
    assert!(msg.contains("other than the one that made it"), "panic message {msg:?}");
    // Dropped elsewhere: leaked untouched, no panic.
    thread::spawn(move || drop(b)).join().expect("dropping a LocalSleep off its thread");
    // The executor still runs its timers.
    util::bounded(&rt, "a sleep after the others", tally::time::sleep(Duration::from_millis(5)));
}

/// Connections in the closing test.
const CLOSING_CONNS: usize = 64;

#[test]
fn keep_alive_clients_that_close_after_their_last_response_end_cleanly() {
    // 64 connections at once make the streams batch their sends through
    // the ring; a peer that closes right after the response of a send
    // still in flight must still be a clean end of the connection for
    // hyper, not "connection closed before message completed".
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(move || {
                let mut conns: Vec<_> = (0..CLOSING_CONNS / 2)
                    .map(|_| {
                        let s = TcpStream::connect(addr).unwrap();
                        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
                        s.set_nodelay(true).unwrap();
                        let w = s.try_clone().unwrap();
                        (w, BufReader::new(s))
                    })
                    .collect();
                for i in 0..100 {
                    for (w, _) in &mut conns {
                        write!(w, "GET /c{i} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                    }
                    for (_, r) in &mut conns {
                        let want = format!("hello /c{i}").into_bytes();
                        assert_eq!(read_response(r).unwrap(), (200, want));
                    }
                }
            })
        })
        .collect();
    let rt = LocalReactor::new().unwrap();
    let ended = util::bounded(&rt, "64 keep-alive connections", async move {
        let listener = TcpListener::from_std(listener);
        let mut conns = Vec::new();
        for _ in 0..CLOSING_CONNS {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            conns.push(tally::spawn(
                http1::Builder::new().serve_connection(stream, service_fn(service)),
            ));
        }
        let mut ended = Vec::new();
        for c in conns {
            ended.push(c.await.unwrap().map_err(|e| e.to_string()));
        }
        ended
    });
    for c in clients {
        c.join().unwrap();
    }
    let errors: Vec<_> = ended.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(errors.is_empty(), "{} connections ended with an error: {errors:?}", errors.len());
}

#[test]
fn hyper_flush_does_not_wait_for_a_send_in_flight_and_shutdown_does() {
    use std::future::poll_fn;
    use std::pin::Pin;

    use hyper::rt::Write as _;
    let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    theirs.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let rt = LocalReactor::new().unwrap();
    let (written, flushed_at_once) = util::bounded(&rt, "writes past a full socket", async move {
        let mut stream = tally::net::UnixStream::from_std(mine);
        let chunk: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
        // Every write's bytes in order: `chunk[..n]` for each write of `n`.
        let mut expected = Vec::new();
        // The peer reads nothing yet: inline sends fill the socket buffer,
        // then a write becomes a send through the ring, in flight until the
        // peer reads. Stop at the first write that had to wait for one.
        let mut flushed_at_once = None;
        for _ in 0..64 {
            let n = poll_fn(|cx| Pin::new(&mut stream).poll_write(cx, &chunk)).await.unwrap();
            expected.extend_from_slice(&chunk[..n]);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let mut inner = futures::AsyncWriteExt::flush(&mut stream);
            let in_flight = Pin::new(&mut inner).poll(&mut cx).is_pending();
            drop(inner);
            if in_flight {
                // hyper's flush is ready: the bytes are the reactor's.
                let flushed = Pin::new(&mut stream).poll_flush(&mut cx);
                flushed_at_once = Some(matches!(flushed, std::task::Poll::Ready(Ok(()))));
                break;
            }
        }
        let reader = thread::spawn(move || {
            let mut all = Vec::new();
            let mut theirs = theirs;
            theirs.read_to_end(&mut all).unwrap();
            all
        });
        // Shutdown waits for the send in flight, then ends the stream.
        poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx)).await.unwrap();
        let all = tally::task::spawn_blocking(move || reader.join().unwrap()).await.unwrap();
        assert_eq!(all.len(), expected.len(), "the peer got every byte written");
        assert!(all == expected, "the peer got other bytes than were written");
        (expected.len(), flushed_at_once)
    });
    assert!(written > 0);
    assert_eq!(flushed_at_once, Some(true), "no write went through the ring, or flush waited");
}
