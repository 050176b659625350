//! W7 `http`: hyper 1.x's HTTP/1.1 hello world, one server thread, 64
//! keep-alive connections on loopback, one request in flight on each (a
//! closed loop). The client is a separate process, the same for every
//! server ([`crate::http_client`]); it times the request phase, and the
//! throughput is requests answered per second.
//!
//! As in W4, the client shares the two cores with the server, so the
//! server thread's CPU time per request, from its last accept to its first
//! close, is reported too ("W7 http server-cpu").
//!
//! Every server runs the same hyper program: `TCP_NODELAY` on accepted
//! sockets, a task per connection serving `http1::Builder::new()` with no
//! timer and a `service_fn` that answers `Hello, world!\n` from a static
//! `Full<Bytes>`, and stops when every connection has closed.
//!
//! * **tally**: on `tally::LocalReactor`, `tally::net::TcpStream` handed
//!   to hyper as it is (`tally::hyper`'s `Read`/`Write`).
//! * **tally-epoll**: the same, on an executor whose reactor is built with
//!   `Backend::Epoll`.
//! * **tokio**: on a `current_thread` runtime, each `tokio::net::TcpStream`
//!   in [`TokioIo`], which maps hyper's I/O traits to tokio's as
//!   hyper-util's `TokioIo` does (vectored writes included).

use std::convert::Infallible;
use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tally_reactor::Backend;

use super::echo::{self, DEADLINE, Steady, timed_out};
use super::{Config, tally_executor_on, tokio_runtime};
use crate::harness::{Case, Engine, Run, Spec};
use crate::http_client::BODY;
use crate::sys;

/// Client connections.
pub const CONNS: usize = 64;

/// The W7 spec. The count is requests: [`CONNS`] × requests per connection.
pub fn spec(cfg: Config) -> Spec {
    let per_conn = cfg.pick(600, 1500);
    Spec {
        name: "W7 http".into(),
        unit: "reqs/s",
        count: per_conn * CONNS as u64,
        warmup: 50 * CONNS as u64,
        cases: vec![
            Case::new(Engine::Tally, |n| with_client(n, |l, s| tally(l, s, Backend::Auto))),
            Case::new(Engine::TallyEpoll, |n| with_client(n, |l, s| tally(l, s, Backend::Epoll))),
            Case::new(Engine::Tokio, |n| with_client(n, tokio)),
        ],
    }
}

/// The service every server runs.
async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(BODY))))
}

/// Starts the client process against a fresh listener, runs `server` on
/// this thread until every connection has closed, and reads the client's
/// timing; the server's CPU time and allocations come from its [`Steady`]
/// marks.
fn with_client(
    requests: u64,
    server: impl FnOnce(TcpListener, Arc<Steady>) -> io::Result<()>,
) -> io::Result<Run> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    sys::set_backlog(listener.as_raw_fd(), 1024)?;
    let addr: SocketAddr = listener.local_addr()?;
    let steady = Arc::new(Steady::default());
    let per_conn = (requests / CONNS as u64).max(1);
    let serve = || server(listener, steady.clone());
    echo::client_process("--http-client", "http client", addr, CONNS, per_conn, &steady, serve)
}

/// A connection's end, as every server reports it: hyper's error as an
/// `io::Error`.
fn conn_result(r: Result<(), hyper::Error>) -> io::Result<()> {
    r.map_err(|e| io::Error::other(format!("http server connection: {e}")))
}

fn tally(listener: TcpListener, steady: Arc<Steady>, backend: Backend) -> io::Result<()> {
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
                    let r = http1::Builder::new().serve_connection(stream, service_fn(hello)).await;
                    steady.end();
                    conn_result(r)
                }));
            }
            steady.begin();
            for t in tasks {
                t.await.map_err(io::Error::other)??;
            }
            Ok::<(), io::Error>(())
        };
        tally::time::timeout(DEADLINE, serve).await.map_err(|_| timed_out())?
    })
}

fn tokio(listener: TcpListener, steady: Arc<Steady>) -> io::Result<()> {
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
                    let r = http1::Builder::new()
                        .serve_connection(TokioIo(stream), service_fn(hello))
                        .await;
                    steady.end();
                    conn_result(r)
                }));
            }
            steady.begin();
            for t in tasks {
                t.await.map_err(io::Error::other)??;
            }
            Ok::<(), io::Error>(())
        };
        tokio::time::timeout(DEADLINE, serve).await.map_err(|_| timed_out())?
    })
}

/// A tokio stream as hyper's I/O: what hyper-util's `TokioIo` does, for
/// the one stream type W7 needs (hyper-util itself is not a dependency).
#[derive(Debug)]
pub struct TokioIo(pub tokio::net::TcpStream);

impl hyper::rt::Read for TokioIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the tokio `ReadBuf` only writes initialised bytes into
        // the uninitialised tail it is given (tokio's `AsyncRead` contract,
        // which `TcpStream` keeps), and never de-initialises any.
        let tail: &mut [MaybeUninit<u8>] = unsafe { buf.as_mut() };
        let mut tbuf = tokio::io::ReadBuf::uninit(tail);
        let n = match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, &mut tbuf) {
            Poll::Ready(Ok(())) => tbuf.filled().len(),
            other => return other,
        };
        // SAFETY: the first `n` bytes of the tail were filled (initialised)
        // by the read above.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for TokioIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write_vectored(Pin::new(&mut self.0), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        tokio::io::AsyncWrite::is_write_vectored(&self.0)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}
