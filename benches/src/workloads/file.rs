//! W8 `file`: 4 KiB reads at random page-aligned offsets of a file that
//! sits in the page cache, 64 in flight, a bounded count per run.
//!
//! The file is 256 MiB and a run reads 500k pages (`--quick`: 64 MiB and
//! 100k reads, which keeps tokio's runs to seconds),
//! made once under the build's `target/` folder (beside the `compare`
//! binary; `TALLY_W8_DIR` picks another folder) and kept for later runs,
//! then read through once per process so that every page is cached. Each
//! engine draws its offsets from the same xorshift sequence, one per
//! in-flight reader.
//!
//! * **tally**: `tally::fs::File`, shared by 64 tasks on a `LocalReactor`;
//!   each task loops on `read_at` with its one reused 4 KiB buffer. On
//!   io_uring the 64 reads of a crank are queued as SQEs and submitted by
//!   the reactor's one enter, and their completions come back in one reap.
//! * **tally-epoll**: the same code on `Backend::Epoll`, where each read is
//!   a `pread(2)` made when its future is first polled.
//! * **tokio**: `tokio::fs::File` on a `current_thread` runtime, 64 tasks,
//!   each with its own file: `seek` then `read_exact`, each a trip to
//!   tokio's blocking pool.
//! * **pread**: one thread, a loop of `pread(2)` into one buffer: the
//!   limit, with no runtime at all.

use std::cell::Cell;
use std::fs::File as StdFile;
use std::io::{self, Read, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;

use tally_reactor::Backend;

use super::{Config, tally_executor_on};
use crate::harness::{Case, Engine, Run, Spec, Window};

/// Bytes per read.
pub const READ: usize = 4096;
/// Reads in flight at once.
pub const IN_FLIGHT: u64 = 64;

/// The W8 spec: the file is made (and cached) here, before any window.
pub fn spec(cfg: Config) -> Spec {
    let size = cfg.pick(64 << 20, 256 << 20);
    let count = cfg.pick(100_000, 500_000);
    let path = match prepare(size) {
        Ok(path) => path,
        Err(e) => {
            // Every case then fails in its warm-up, and the note says why.
            eprintln!("W8: could not make its file: {e}");
            PathBuf::from("/nonexistent/tally-w8")
        }
    };
    let pages = size / READ as u64;
    let (p1, p2, p3, p4) = (path.clone(), path.clone(), path.clone(), path);
    Spec {
        name: "W8 file".into(),
        unit: "reads/s",
        count,
        warmup: count / 10,
        cases: vec![
            Case::new(Engine::Tally, move |n| tally(&p1, pages, n, Backend::Auto)),
            Case::new(Engine::TallyEpoll, move |n| tally(&p2, pages, n, Backend::Epoll)),
            Case::new(Engine::Tokio, move |n| tokio(&p3, pages, n)),
            Case::new(Engine::Pread, move |n| pread(&p4, pages, n)),
        ],
    }
}

/// The file of `size` bytes, made if missing, and read through once (per
/// process) so that the page cache holds it.
fn prepare(size: u64) -> io::Result<PathBuf> {
    static WARMED: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    let dir = match std::env::var_os("TALLY_W8_DIR") {
        Some(dir) => PathBuf::from(dir),
        // target/release/compare -> target/
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map_or_else(std::env::temp_dir, Path::to_path_buf),
    };
    let path = dir.join(format!("tally-w8-{}MiB.dat", size >> 20));
    let fresh = std::fs::metadata(&path).map(|m| m.len() != size).unwrap_or(true);
    if fresh {
        let tmp = path.with_extension("tmp");
        let mut f = StdFile::create(&tmp)?;
        let mut chunk = vec![0u8; 1 << 20];
        for mb in 0..size >> 20 {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = (i as u64 ^ mb).wrapping_mul(0x9E37_79B9) as u8;
            }
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    let mut warmed = WARMED.lock().unwrap_or_else(|e| e.into_inner());
    if !warmed.contains(&size) {
        let mut f = StdFile::open(&path)?;
        let mut chunk = vec![0u8; 1 << 20];
        while f.read(&mut chunk)? > 0 {}
        warmed.push(size);
    }
    Ok(path)
}

/// A reader's offsets: xorshift64 from a seed per reader, page-aligned.
struct Offsets {
    state: u64,
    pages: u64,
}

impl Offsets {
    fn new(reader: u64, pages: u64) -> Offsets {
        Offsets {
            state: 0x2545_F491_4F6C_DD1D ^ (reader + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            pages,
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        (x % self.pages) * READ as u64
    }
}

/// Reads reader `r` of [`IN_FLIGHT`] does, of `n` in all.
fn share(n: u64, r: u64) -> u64 {
    n / IN_FLIGHT + u64::from(r < n % IN_FLIGHT)
}

fn short_read(n: usize) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("a {READ}-byte read got {n}"))
}

fn tally(path: &Path, pages: u64, n: u64, backend: Backend) -> io::Result<Run> {
    let rt = tally_executor_on(backend)?;
    rt.block_on(async {
        let file = Rc::new(tally::fs::File::open(path).await?);
        let failed: Rc<Cell<Option<io::Error>>> = Rc::new(Cell::new(None));
        let window = Window::open();
        let mut tasks = Vec::with_capacity(IN_FLIGHT as usize);
        for r in 0..IN_FLIGHT {
            let (file, failed) = (file.clone(), failed.clone());
            tasks.push(tally::spawn(async move {
                let mut offsets = Offsets::new(r, pages);
                let mut buf = Vec::with_capacity(READ);
                for _ in 0..share(n, r) {
                    buf.clear();
                    let (res, back) = file.read_at(buf, offsets.next()).await;
                    buf = back;
                    match res {
                        Ok(READ) => {}
                        Ok(got) => return failed.set(Some(short_read(got))),
                        Err(e) => return failed.set(Some(e)),
                    }
                }
            }));
        }
        for task in tasks {
            task.await.map_err(io::Error::other)?;
        }
        let run = window.close(n);
        super::debug_metrics("W8 tally", &tally::reactor());
        match failed.take() {
            Some(e) => Err(e),
            None => Ok(run),
        }
    })
}

fn tokio(path: &Path, pages: u64, n: u64) -> io::Result<Run> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut files = Vec::with_capacity(IN_FLIGHT as usize);
        for _ in 0..IN_FLIGHT {
            files.push(tokio::fs::File::open(path).await?);
        }
        let window = Window::open();
        let mut tasks = Vec::with_capacity(IN_FLIGHT as usize);
        for (r, mut file) in (0..IN_FLIGHT).zip(files) {
            tasks.push(tokio::spawn(async move {
                let mut offsets = Offsets::new(r, pages);
                let mut buf = vec![0u8; READ];
                for _ in 0..share(n, r) {
                    file.seek(SeekFrom::Start(offsets.next())).await?;
                    file.read_exact(&mut buf).await?;
                }
                io::Result::Ok(())
            }));
        }
        for task in tasks {
            task.await.map_err(io::Error::other)??;
        }
        Ok(window.close(n))
    })
}

fn pread(path: &Path, pages: u64, n: u64) -> io::Result<Run> {
    let file = StdFile::open(path)?;
    let mut buf = vec![0u8; READ];
    let mut readers: Vec<Offsets> = (0..IN_FLIGHT).map(|r| Offsets::new(r, pages)).collect();
    let window = Window::open();
    // The same offsets as the others, taken round-robin from the readers.
    for i in 0..n {
        let off = readers[(i % IN_FLIGHT) as usize].next();
        let got = file.read_at(&mut buf, off)?;
        if got != READ {
            return Err(short_read(got));
        }
    }
    Ok(window.close(n))
}
