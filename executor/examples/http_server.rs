//! hyper's hello world on one thread: a `LocalReactor`, HTTP/1.1 with
//! keep-alive, a task per connection.
//!
//! ```text
//! cargo run --release -p tally --features hyper --example http_server -- 127.0.0.1:8080
//! curl -i http://127.0.0.1:8080/
//! ```
//!
//! The address is the first argument; without one, `127.0.0.1:$PORT`, or
//! `127.0.0.1:8080` without `PORT`. It prints the address it listens on
//! and the reactor's backend (`TALLY_BACKEND=epoll` forces epoll).

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tally::LocalReactor;
use tally::hyper::LocalTimer;
use tally::net::TcpListener;

async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"Hello, world!\n"))))
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| {
        let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
        format!("127.0.0.1:{port}")
    });
    let rt = LocalReactor::new()?;
    rt.block_on(async {
        let listener = TcpListener::bind(&addr)?;
        let m = tally::reactor().metrics();
        let why = m.fallback.map(|f| format!(", {f}")).unwrap_or_default();
        println!("http server on http://{} (backend {}{why})", listener.local_addr()?, m.backend);
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of fds (EMFILE, ENFILE) or memory: the listener is
                // fine, so say so, give connections a moment to close,
                // and go on serving the ones already open.
                Err(e) if is_transient(&e) => {
                    eprintln!("accept: {e}");
                    tally::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Responses go out whole; do not let Nagle hold one back. A
            // connection already reset fails here: drop it, not the server.
            if stream.set_nodelay(true).is_err() {
                continue;
            }
            tally::spawn(async move {
                let conn = http1::Builder::new()
                    .timer(LocalTimer)
                    .serve_connection(stream, service_fn(hello));
                match conn.await {
                    // A client that closed with a request unanswered (as
                    // wrk does when it stops) is no server error.
                    Err(e) if e.is_incomplete_message() => {}
                    Err(e) => eprintln!("connection error: {e}"),
                    Ok(()) => {}
                }
            });
        }
    })
}

/// Whether an accept error passes (out of fds or memory), as opposed to
/// one that says the listener itself is broken.
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    )
}
