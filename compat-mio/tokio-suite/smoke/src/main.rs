//! tokio on compat-mio, end to end: TCP, UDP, Unix streams, `AsyncFd`,
//! `tokio::signal` and `tokio::process`, on a `current_thread` and on a
//! multi-thread runtime. Exits non-zero (with what failed) on any error,
//! and within a bounded time.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use tokio::signal::unix::{signal, SignalKind};

async fn tcp() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return io::Result::Ok(());
            }
            s.write_all(&buf[..n]).await?;
        }
    });
    let mut c = TcpStream::connect(addr).await?;
    let msg: Vec<u8> = (0..256 * 1024).map(|i| i as u8).collect();
    let (mut r, mut w) = c.split();
    let write = async {
        w.write_all(&msg).await?;
        w.shutdown().await
    };
    let mut back = Vec::new();
    let (wrote, read) = tokio::join!(write, r.read_to_end(&mut back));
    wrote?;
    read?;
    assert_eq!(back, msg, "tcp echo corrupted");
    server.await.unwrap()
}

async fn udp() -> io::Result<()> {
    let a = UdpSocket::bind("127.0.0.1:0").await?;
    let b = UdpSocket::bind("127.0.0.1:0").await?;
    b.connect(a.local_addr()?).await?;
    for i in 0..100u32 {
        b.send(&i.to_le_bytes()).await?;
        let mut buf = [0; 4];
        let (n, from) = a.recv_from(&mut buf).await?;
        assert_eq!((n, from, u32::from_le_bytes(buf)), (4, b.local_addr()?, i));
    }
    Ok(())
}

async fn unix() -> io::Result<()> {
    let (mut a, mut b) = UnixStream::pair()?;
    let echo = tokio::spawn(async move {
        let mut buf = [0; 5];
        b.read_exact(&mut buf).await?;
        b.write_all(&buf).await?;
        io::Result::Ok(())
    });
    a.write_all(b"hello").await?;
    let mut buf = [0; 5];
    a.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"hello");
    echo.await.unwrap()
}

/// `AsyncFd` on a pipe: readiness of a raw fd, as tokio's `AsyncFd` users
/// (who bypass mio's I/O types) see it.
async fn async_fd() -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for `pipe2` to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `pipe2` just created both fds; nothing else owns them.
    let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: `rx` is an `OwnedFd` the `AsyncFd` owns: it stays open, and
    // the same fd, until the `AsyncFd` drops it.
    let rx = unsafe { AsyncFd::register(rx) }.map_err(io::Error::from)?;
    for round in 0..10u8 {
        let writer = {
            let tx = tx.try_clone()?;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                // SAFETY: `tx` is an open pipe; the buffer is one valid byte.
                let n = unsafe { libc::write(std::os::fd::AsRawFd::as_raw_fd(&tx), [round].as_ptr().cast(), 1) };
                assert_eq!(n, 1);
            })
        };
        // Readable, then read until the byte comes: a spurious wake-up
        // (allowed) clears readiness through `try_io` and waits again.
        let byte = loop {
            let mut guard = rx.readable().await?;
            let mut byte = [0u8; 1];
            let got = guard.try_io(|fd| {
                // SAFETY: `fd` is the open read end; `byte` is one writable byte.
                let n = unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(fd.get_ref()), byte.as_mut_ptr().cast(), 1) };
                if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n) }
            });
            match got {
                Ok(Ok(1)) => break byte[0],
                Ok(other) => panic!("read {other:?}"),
                Err(_would_block) => continue,
            }
        };
        assert_eq!(byte, round);
        writer.await.unwrap();
    }
    Ok(())
}

async fn signals() -> io::Result<()> {
    let mut usr1 = signal(SignalKind::user_defined1())?;
    // SAFETY: sends SIGUSR1 to this process, whose handler tokio installed.
    unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    usr1.recv().await.expect("the signal stream ended");
    Ok(())
}

async fn process() -> io::Result<()> {
    let out = tokio::process::Command::new("sh").args(["-c", "echo hi; exit 3"]).output().await?;
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.status.code(), Some(3));
    let mut child = tokio::process::Command::new("sleep").arg("10").kill_on_drop(true).spawn()?;
    child.start_kill()?;
    assert!(!child.wait().await?.success());
    Ok(())
}

async fn all() -> io::Result<()> {
    tcp().await.map_err(|e| io::Error::other(format!("tcp: {e}")))?;
    udp().await.map_err(|e| io::Error::other(format!("udp: {e}")))?;
    unix().await.map_err(|e| io::Error::other(format!("unix: {e}")))?;
    async_fd().await.map_err(|e| io::Error::other(format!("AsyncFd: {e}")))?;
    signals().await.map_err(|e| io::Error::other(format!("signal: {e}")))?;
    process().await.map_err(|e| io::Error::other(format!("process: {e}")))?;
    Ok(())
}

/// Whether this process holds an io_uring fd: tokio's I/O driver is
/// tally's reactor on io_uring.
fn holds_a_ring() -> bool {
    std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten().any(|e| {
        std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("io_uring"))
    })
}

fn main() -> io::Result<()> {
    let bound = Duration::from_secs(60);
    for name in ["current_thread", "multi_thread"] {
        let rt = match name {
            "current_thread" => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
            _ => tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?,
        };
        if std::env::var("TALLY_BACKEND").as_deref() != Ok("epoll") {
            assert!(holds_a_ring(), "no io_uring fd: is mio really patched to compat-mio?");
        }
        rt.block_on(async { tokio::time::timeout(bound, all()).await })
            .map_err(|_| io::Error::other(format!("{name}: timed out")))?
            .map_err(|e| io::Error::other(format!("{name}: {e}")))?;
        println!("tokio smoke on compat-mio ({name}): tcp, udp, unix, AsyncFd, signal, process ok");
    }
    Ok(())
}
