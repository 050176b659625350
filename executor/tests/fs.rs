//! `tally::fs` on real files in a fresh temporary directory: round trips
//! of many sizes at unaligned offsets, errors as the kernel gives them,
//! metadata and the path helpers, many reads in flight on one file, and
//! a dropped read whose buffer must outlive the kernel's use of it (watched
//! by a counting allocator). Each test passes on both backends
//! (`TALLY_BACKEND=epoll` for the fallback).

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use tally::fs::{self, File, OpenOptions};
use tally::{Backend, LocalReactor};

struct Watching;

/// The address of the one allocation whose free is watched, and whether
/// it was freed.
static WATCHED: AtomicUsize = AtomicUsize::new(0);
static WATCHED_FREED: AtomicBool = AtomicBool::new(false);
/// Bytes allocated minus bytes freed on a tracking thread.
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
}

fn tracking() -> bool {
    TRACKING.try_with(|t| t.get()).unwrap_or(false)
}

fn on_free(ptr: *mut u8, size: usize) {
    if ptr as usize == WATCHED.load(Ordering::SeqCst) {
        WATCHED_FREED.store(true, Ordering::SeqCst);
    }
    if tracking() {
        LIVE_BYTES.fetch_sub(size as i64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping touches only atomics and a const-initialised thread-local,
// which never allocate.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if tracking() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_free(ptr, layout.size());
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_free(ptr, layout.size());
        if tracking() {
            LIVE_BYTES.fetch_add(new_size as i64, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Watching = Watching;

/// A fresh directory under the system's temporary one, removed (with what
/// is in it) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir()
            .join(format!("tally-fs-{}-{name}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pattern that differs at every offset of a page and from page to page.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add((i >> 12) as u8 ^ seed)).collect()
}

/// Every test holds this while it runs: `opens_dropped_midway_leak_no_fd`
/// counts this process's open fds, which other tests would change.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn rt() -> LocalReactor {
    LocalReactor::new().unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn backend(rt: &LocalReactor) -> Backend {
    rt.metrics().backend
}

#[test]
fn round_trips_sizes_at_unaligned_offsets() {
    let _serial = serial();
    let dir = TempDir::new("sizes");
    let rt = rt();
    let sizes = [0, 1, 4095, 4096, 4097, (1 << 20) + 3, 8 << 20];
    let offsets = [0u64, 1, 4097, 12_345];
    util::bounded(&rt, "round trips", async {
        for (i, &size) in sizes.iter().enumerate() {
            for &offset in &offsets {
                let path = dir.path(&format!("f-{size}-{offset}"));
                let data = pattern(size, i as u8);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .await
                    .unwrap();
                let (res, back) = file.write_all_at(data.clone(), offset).await;
                res.unwrap();
                assert_eq!(back, data, "write_all_at hands its buffer back unchanged");
                let (res, got) = file.read_exact_at(Vec::with_capacity(size), offset).await;
                res.unwrap();
                assert!(got == data, "size {size} at {offset}: read back differs");
                // Past the end: 0 bytes, the buffer back as it was.
                let end = offset + size as u64;
                let (n, buf) = file.read_at(Vec::with_capacity(16), end).await;
                assert_eq!((n.unwrap(), buf.len()), (0, 0));
                // An empty write extends nothing.
                let len = if size == 0 { 0 } else { end };
                assert_eq!(file.metadata().await.unwrap().len(), len);
                drop(file);
                let whole = fs::read(&path).await.unwrap();
                assert_eq!(whole.len() as u64, len);
                if size > 0 {
                    let hole = &whole[..offset as usize];
                    assert!(hole.iter().all(|&b| b == 0), "a hole reads as zeros");
                    assert!(whole[offset as usize..] == data[..]);
                }
            }
        }
    });
}

#[test]
fn read_appends_to_what_the_buffer_holds() {
    let _serial = serial();
    let dir = TempDir::new("append");
    let rt = rt();
    util::bounded(&rt, "append", async {
        let path = dir.path("f");
        fs::write(&path, b"0123456789").await.unwrap();
        let file = File::open(&path).await.unwrap();
        let mut buf = Vec::with_capacity(6);
        buf.extend_from_slice(b"ab");
        let (n, buf) = file.read_at(buf, 3).await;
        assert_eq!((n.unwrap(), &buf[..]), (4, &b"ab3456"[..]));
        // A full buffer reads nothing and is not grown.
        let (n, buf) = file.read_at(buf, 0).await;
        assert_eq!((n.unwrap(), buf.len(), buf.capacity()), (0, 6, 6));
    });
}

#[test]
fn errors_are_the_kernels() {
    let _serial = serial();
    let dir = TempDir::new("errors");
    let rt = rt();
    util::bounded(&rt, "errors", async {
        let missing = File::open(dir.path("missing")).await.unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT), "{missing}");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);

        let as_dir = File::open(&dir.0).await.unwrap();
        let (res, buf) = as_dir.read_at(Vec::with_capacity(64), 0).await;
        let e = res.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "{e}");
        assert_eq!(buf.capacity(), 64, "the buffer comes back");
        assert!(as_dir.metadata().await.unwrap().is_dir());

        let path = dir.path("ro");
        fs::write(&path, b"read only").await.unwrap();
        let ro = File::open(&path).await.unwrap();
        let (res, buf) = ro.write_at(b"nope".to_vec(), 0).await;
        let e = res.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        assert_eq!(buf, b"nope", "the caller's buffer comes back, not an empty one");
        let e = ro.set_len(0).await.unwrap_err();
        assert!(matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EBADF)), "{e}");
        assert_eq!(fs::read(&path).await.unwrap(), b"read only");

        let e = OpenOptions::new().create(true).open(dir.path("x")).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = File::open(dir.path("nul\0byte")).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = OpenOptions::new().write(true).create_new(true).open(&path).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    });
}

#[test]
fn metadata_rename_remove_create_dir() {
    let _serial = serial();
    let dir = TempDir::new("paths");
    let rt = rt();
    let features = rt.block_on(async { tally::reactor().features() });
    println!("backend {:?}; file ops on the ring: {}", backend(&rt), features.file_ops);
    util::bounded(&rt, "path helpers", async {
        let before = SystemTime::now() - Duration::from_secs(5);
        let a = dir.path("a");
        fs::write(&a, vec![7u8; 5000]).await.unwrap();
        let m = fs::metadata(&a).await.unwrap();
        assert!(m.is_file() && !m.is_dir());
        assert_eq!(m.len(), 5000);
        assert_eq!(m.mode() & 0o600, 0o600, "mode {:o}", m.mode());
        assert_eq!(m.permissions().mode_bits(), m.mode());
        assert!(m.modified().unwrap() >= before);

        let b = dir.path("b");
        fs::rename(&a, &b).await.unwrap();
        assert_eq!(fs::metadata(&a).await.unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert_eq!(fs::read(&b).await.unwrap(), vec![7u8; 5000]);
        let e = fs::rename(&a, &b).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");

        let sub = dir.path("sub");
        fs::create_dir(&sub).await.unwrap();
        assert!(fs::metadata(&sub).await.unwrap().is_dir());
        let e = fs::create_dir(&sub).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        let e = fs::create_dir(dir.path("no/such/parent")).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        let e = fs::remove_file(&sub).await.unwrap_err();
        assert!(matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)), "{e}");

        fs::remove_file(&b).await.unwrap();
        assert_eq!(fs::remove_file(&b).await.unwrap_err().raw_os_error(), Some(libc::ENOENT));
        fs::remove_dir(&sub).await.unwrap();
        assert!(!std::path::Path::new(&sub).exists());
    });
}

/// `Permissions` has no getter for the mode bits without the trait.
trait ModeBits {
    fn mode_bits(&self) -> u32;
}

impl ModeBits for std::fs::Permissions {
    fn mode_bits(&self) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(self) & 0o7777
    }
}

#[test]
fn set_len_and_sync() {
    let _serial = serial();
    let dir = TempDir::new("set-len");
    let rt = rt();
    util::bounded(&rt, "set_len", async {
        let path = dir.path("f");
        let file = File::create(&path).await.unwrap();
        let (res, _) = file.write_all_at(pattern(10_000, 3), 0).await;
        res.unwrap();
        file.sync_all().await.unwrap();
        file.set_len(20_000).await.unwrap();
        file.sync_data().await.unwrap();
        assert_eq!(file.metadata().await.unwrap().len(), 20_000);
        file.set_len(4_000).await.unwrap();
        assert_eq!(file.metadata().await.unwrap().len(), 4_000);
        file.set_len(6_000).await.unwrap();
        // A length off_t cannot hold is refused on both backends, and the
        // file is left as it was.
        let err = file.set_len(u64::MAX).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert_eq!(file.metadata().await.unwrap().len(), 6_000);
        drop(file);
        let got = fs::read(&path).await.unwrap();
        assert_eq!(got.len(), 6_000);
        assert!(got[..4_000] == pattern(10_000, 3)[..4_000]);
        assert!(got[4_000..].iter().all(|&b| b == 0), "an extension reads as zeros");
    });
}

/// Many reads in flight on one file from many tasks, each with its own
/// result; then some calls dropped mid-flight while others wait, which
/// must neither lose nor mix up the others' completions.
#[test]
fn many_reads_in_flight_on_one_file() {
    let _serial = serial();
    let dir = TempDir::new("many");
    let rt = rt();
    let path = dir.path("f");
    let data = Rc::new(pattern(256 * 4096, 9));
    util::bounded(&rt, "many reads", async {
        fs::write(&path, &data[..]).await.unwrap();
        let file = Rc::new(File::open(&path).await.unwrap());
        let mut tasks = Vec::new();
        for t in 0..64u64 {
            let (file, data) = (file.clone(), data.clone());
            tasks.push(tally::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                for i in 0..50u64 {
                    let page = (t * 7 + i * 13) % 256;
                    buf.clear();
                    let (res, back) = file.read_at(buf, page * 4096 + 1).await;
                    buf = back;
                    let n = res.unwrap();
                    let at = (page * 4096 + 1) as usize;
                    assert_eq!(&buf[..n], &data[at..at + n], "task {t} read {i}");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }

        // Half the calls polled once and dropped, the other half awaited.
        let mut calls: Vec<Pin<Box<dyn Future<Output = _>>>> = Vec::new();
        for i in 0..32u64 {
            calls.push(Box::pin(file.read_at(Vec::with_capacity(4096), i * 4096)));
        }
        // On epoll a read is made at once, on the first poll.
        let firsts: Vec<_> = calls.iter_mut().map(util::poll_once).collect();
        let mut kept = Vec::new();
        for (i, (call, first)) in calls.into_iter().zip(firsts).enumerate() {
            if i % 2 == 1 {
                kept.push((i, call, first));
            }
        }
        for (i, call, first) in kept {
            let (res, buf) = match first {
                Poll::Ready(out) => out,
                Poll::Pending => call.await,
            };
            let n = res.unwrap();
            assert_eq!(n, 4096);
            assert!(buf[..] == data[i * 4096..(i + 1) * 4096], "call {i}");
        }
    });
}

/// A read dropped while in flight: the reactor keeps its buffer until the
/// kernel's completion is reaped, frees it then, and keeps nothing else.
#[test]
fn dropped_read_keeps_its_buffer_until_the_kernel_is_done() {
    let _serial = serial();
    let dir = TempDir::new("dropped");
    let rt = rt();
    let path = dir.path("f");
    const CAP: usize = (4 << 20) + 1;
    util::bounded(&rt, "set up", fs::write(&path, pattern(CAP, 5))).unwrap();
    let file = util::bounded(&rt, "open", File::open(&path)).unwrap();
    // Warm up: the file's registration, its tables, the page cache.
    let (res, _) = util::bounded(&rt, "warm", file.read_at(Vec::with_capacity(CAP), 0));
    res.unwrap();

    let buf = Vec::with_capacity(CAP);
    WATCHED_FREED.store(false, Ordering::SeqCst);
    WATCHED.store(buf.as_ptr() as usize, Ordering::SeqCst);
    let epoll = backend(&rt) == Backend::Epoll;
    let mut call = Box::pin(file.read_at(buf, 0));
    let first = rt.block_on(async { util::poll_once(&mut call) });
    TRACKING.with(|t| t.set(true));
    LIVE_BYTES.store(0, Ordering::SeqCst);
    if epoll {
        // epoll cannot wait on a file: the read was made at once.
        let Poll::Ready((res, buf)) = first else { panic!("a read on epoll waits") };
        assert_eq!(res.unwrap(), CAP);
        drop(buf);
        drop(call);
    } else {
        assert!(first.is_pending(), "the read was submitted, not yet reaped");
        drop(call);
        assert!(
            !WATCHED_FREED.load(Ordering::SeqCst),
            "the buffer was freed before the kernel's completion was reaped"
        );
    }
    for _ in 0..100 {
        if WATCHED_FREED.load(Ordering::SeqCst) {
            break;
        }
        util::crank(&rt);
        std::thread::sleep(Duration::from_millis(1));
    }
    TRACKING.with(|t| t.set(false));
    WATCHED.store(0, Ordering::SeqCst);
    assert!(WATCHED_FREED.load(Ordering::SeqCst), "the dropped read's buffer was never freed");
    let live = LIVE_BYTES.load(Ordering::SeqCst);
    assert!(live <= -(CAP as i64) + 4096, "{live} bytes kept after the buffer was freed");
    // The file still works, and its registration was not left stuck.
    let (res, buf) = util::bounded(&rt, "after", file.read_at(Vec::with_capacity(10), 3));
    assert_eq!(res.unwrap(), 10);
    assert!(buf[..] == pattern(CAP, 5)[3..13]);
}

/// Opens dropped at every stage (before their first poll, after it, and
/// mid-flight among others that finish) close every fd they made, on
/// either backend (on epoll an open runs on the blocking pool, and its fd
/// is closed when the detached job's result is dropped).
#[test]
fn opens_dropped_midway_leak_no_fd() {
    let _serial = serial();
    let dir = TempDir::new("open-drop");
    let rt = rt();
    let path = dir.path("f");
    util::bounded(&rt, "set up", fs::write(&path, b"x")).unwrap();
    // Warm: the blocking pool's threads and the reactor's tables.
    drop(util::bounded(&rt, "warm", File::open(&path)).unwrap());
    let before = open_fds();
    util::bounded(&rt, "opens", async {
        let mut calls: Vec<Pin<Box<dyn Future<Output = io::Result<File>>>>> = Vec::new();
        for _ in 0..40 {
            calls.push(Box::pin(File::open(&path)));
        }
        let firsts: Vec<_> = calls.iter_mut().take(30).map(util::poll_once).collect();
        drop(firsts);
        let mut kept = Vec::new();
        for (i, call) in calls.into_iter().enumerate() {
            if i % 3 == 0 {
                kept.push(call);
            }
        }
        for call in kept {
            let file = call.await.unwrap();
            assert!(file.metadata().await.unwrap().is_file());
        }
    });
    let mut now = open_fds();
    for _ in 0..200 {
        if now <= before {
            break;
        }
        util::crank(&rt);
        std::thread::sleep(Duration::from_millis(5));
        now = open_fds();
    }
    assert!(now <= before, "{} fds left open by dropped opens", now - before);
}

/// At the reactor's level: an open's fd is lent to the drain that delivers
/// it, as an accept's is: taken with `take_fd` it is the caller's; left
/// untaken, the registration's next drain closes it. Statx hands its
/// status back through `reclaim`, and a missing path is `-ENOENT`.
#[test]
fn an_open_completion_lends_its_fd() {
    let _serial = serial();
    let dir = TempDir::new("lent");
    let rt = rt();
    let path = dir.path("f");
    std::fs::write(&path, b"lent").unwrap();
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    util::bounded(&rt, "lent fds", async {
        let reg = tally::reactor().register();
        let next_completion = || async {
            loop {
                for packet in reg.packets().await {
                    if let Some(c) = packet.as_completion() {
                        return c;
                    }
                }
            }
        };
        let before = open_fds();
        reg.submit(tally::Op::open_at(libc::AT_FDCWD, c_path.clone(), libc::O_RDONLY, 0)).unwrap();
        let c = next_completion().await;
        assert!(c.result >= 0, "open: {}", c.result);
        assert_eq!(c.accepted_fd(), Some(c.result));
        assert_eq!(open_fds(), before + 1, "the fd is open while lent");
        // Not taken: the next drain closes it.
        let _ = reg.try_drain();
        assert_eq!(open_fds(), before, "an untaken open's fd is closed at the next drain");

        reg.submit(tally::Op::open_at(libc::AT_FDCWD, c_path.clone(), libc::O_RDONLY, 0)).unwrap();
        let c = next_completion().await;
        let fd = reg.take_fd(&c).expect("the fd, taken");
        let _ = reg.try_drain();
        assert_eq!(open_fds(), before + 1, "a taken fd stays open");
        drop(fd);

        let op = tally::Op::statx(libc::AT_FDCWD, c_path.clone(), 0, libc::STATX_SIZE, Vec::new());
        let id = reg.submit(op).unwrap();
        let c = next_completion().await;
        assert_eq!(c.result, 0);
        let buf = reg.reclaim(id).expect("statx's buffer");
        assert_eq!(buf.len(), std::mem::size_of::<libc::statx>());
        // SAFETY: a successful statx wrote a whole `struct statx` there.
        let st = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<libc::statx>()) };
        assert_eq!(st.stx_size, 4);

        let missing = std::ffi::CString::new(dir.path("missing").to_str().unwrap()).unwrap();
        reg.submit(tally::Op::open_at(libc::AT_FDCWD, missing, libc::O_RDONLY, 0)).unwrap();
        let c = next_completion().await;
        assert_eq!((c.result, c.accepted_fd()), (-libc::ENOENT, None));
    });
}

/// A read the page cache cannot answer: on epoll the non-waiting read says
/// so and the read is made again on the blocking pool; the bytes are the
/// same either way. (On a file system that keeps no page cache to drop,
/// tmpfs say, the data stays cached and the pool is not used.)
#[test]
fn a_read_of_evicted_pages_is_right() {
    let _serial = serial();
    let dir = TempDir::new("evicted");
    let path = dir.path("cold");
    let data = pattern(1 << 20, 7);
    std::fs::write(&path, &data).unwrap();
    let std_file = std::fs::File::open(&path).unwrap();
    std_file.sync_all().unwrap();
    // SAFETY: posix_fadvise takes no pointers; the fd is open.
    let rc = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&std_file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(rc, 0);
    let rt = rt();
    let threads_before = rt.blocking_threads();
    util::bounded(&rt, "evicted read", async {
        let file = File::open(&path).await.unwrap();
        let (res, got) = file.read_exact_at(Vec::with_capacity(data.len()), 0).await;
        res.unwrap();
        assert!(got == data, "the evicted file reads back wrong");
    });
    println!(
        "backend {:?}: blocking pool threads {} -> {}",
        backend(&rt),
        threads_before,
        rt.blocking_threads()
    );
}

/// Polls `fut` once with the calling task's waker (`util::poll_once` uses
/// a waker that does nothing).
async fn poll_here<F: Future + ?Sized>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// A bufferless op (fsync) leaves the reactor's op slab at its completion,
/// so the next op on the file may take its slot while the sync's call
/// still waits: the sync must still get its own completion (once the
/// file's table was keyed by slot alone, and the read's entry replaced
/// the sync's: a lost completion, or a panic on the sync's next poll).
#[test]
fn a_sync_whose_slot_is_reused_by_a_later_op_still_completes() {
    let _serial = serial();
    let dir = TempDir::new("sync-slot");
    let path = dir.path("f");
    let rt = rt();
    let (synced, read, buf) = util::bounded(&rt, "sync then read", async {
        fs::write(&path, b"hello").await.unwrap();
        let file = OpenOptions::new().read(true).write(true).open(&path).await.unwrap();
        let mut sync = std::pin::pin!(file.sync_all());
        assert!(poll_here(sync.as_mut()).await.is_pending());
        // The fsync completes in the kernel meanwhile; its op slot is freed.
        tally::time::sleep(Duration::from_millis(200)).await;
        // A read on the same file now takes that slot.
        let mut read = std::pin::pin!(file.read_at(Vec::with_capacity(5), 0));
        let first = poll_here(read.as_mut()).await;
        let synced = tally::time::timeout(Duration::from_secs(5), sync).await;
        let (n, buf) = match first {
            Poll::Ready(out) => out,
            Poll::Pending => read.await,
        };
        (synced.map(|r| r.map_err(|e| e.kind())), n.map_err(|e| e.kind()), buf)
    });
    assert_eq!(synced, Ok(Ok(())), "sync_all did not complete");
    assert_eq!(read, Ok(5));
    assert_eq!(buf, b"hello");
}

/// Two tasks read one file: one polls its read once and then sleeps
/// without polling it again (a future kept for later). The other's read
/// must complete meanwhile (once the registration woke only the last call
/// to poll it, and the other task's completion sat queued until the
/// sleeper polled again: 3 s).
#[test]
fn a_read_completes_while_another_tasks_read_on_the_file_is_not_polled() {
    let _serial = serial();
    let dir = TempDir::new("holder");
    let path = dir.path("f");
    let rt = rt();
    let waited = util::bounded(&rt, "two readers", async {
        fs::write(&path, b"hello").await.unwrap();
        let file = Rc::new(File::open(&path).await.unwrap());
        let f1 = file.clone();
        let a = tally::spawn(async move {
            let t = std::time::Instant::now();
            let (n, _) = f1.read_at(Vec::with_capacity(5), 0).await;
            n.unwrap();
            t.elapsed()
        });
        let f2 = file.clone();
        let b = tally::spawn(async move {
            let mut read = std::pin::pin!(f2.read_at(Vec::with_capacity(5), 0));
            if poll_here(read.as_mut()).await.is_pending() {
                tally::time::sleep(Duration::from_secs(3)).await;
                read.await.0.unwrap();
            }
        });
        let waited = a.await.unwrap();
        b.await.unwrap();
        waited
    });
    assert!(waited < Duration::from_secs(1), "task A's read waited {waited:?} for task B to poll");
}

/// To io_uring an offset of u64::MAX (-1) means the file position; a
/// `read_at`/`write_at` there must be `InvalidInput` on both backends, as
/// any offset past i64::MAX is, never a read or write at the position
/// (once, on io_uring, the write landed at offset 0).
#[test]
fn an_offset_of_u64_max_never_means_the_file_position() {
    let _serial = serial();
    let dir = TempDir::new("u64max");
    let path = dir.path("f");
    let rt = rt();
    let (read, wrote, past, after) = util::bounded(&rt, "u64::MAX offsets", async {
        fs::write(&path, b"hello").await.unwrap();
        let file = OpenOptions::new().read(true).write(true).open(&path).await.unwrap();
        let (r, buf) = file.read_at(Vec::with_capacity(5), u64::MAX).await;
        assert_eq!(buf.capacity(), 5, "the buffer comes back");
        let (w, buf) = file.write_at(b"XX".to_vec(), u64::MAX).await;
        assert_eq!(buf, b"XX", "the buffer comes back");
        let (p, _) = file.write_at(b"XX".to_vec(), i64::MAX as u64 + 1).await;
        let kind = |r: io::Result<usize>| r.map_err(|e| e.kind());
        (kind(r), kind(w), kind(p), fs::read(&path).await.unwrap())
    });
    assert_eq!(read, Err(io::ErrorKind::InvalidInput), "read_at(u64::MAX)");
    assert_eq!(wrote, Err(io::ErrorKind::InvalidInput), "write_at(u64::MAX)");
    assert_eq!(past, Err(io::ErrorKind::InvalidInput), "write_at(i64::MAX + 1)");
    assert_eq!(after, b"hello", "the file was overwritten");
}

/// `fs::read` of a file whose size the allocator cannot give (an 8 TiB
/// sparse file) is an `OutOfMemory` error, as std's is, not an abort of
/// the process (once the buffer was `Vec::with_capacity(size + 1)`). Run
/// in a child process, since an abort would take the test binary with it.
/// A file whose size says nothing (in /proc) still reads whole.
#[test]
fn reading_a_huge_sparse_file_is_an_error_not_an_abort() {
    const NAME: &str = "reading_a_huge_sparse_file_is_an_error_not_an_abort";
    const HUGE: u64 = 1 << 43;
    let _serial = serial();
    if std::env::var_os("TALLY_FS_CHILD").is_some() {
        if Vec::<u8>::new().try_reserve_exact(HUGE as usize).is_ok() {
            println!("skipped: this machine lends 8 TiB (overcommit)");
            return;
        }
        let dir = TempDir::new("sparse");
        let path = dir.path("f");
        let file = std::fs::File::create(&path).unwrap();
        if file.set_len(HUGE).is_err() {
            println!("skipped: no 8 TiB sparse file here");
            return;
        }
        let rt = rt();
        let res = util::bounded(&rt, "read", fs::read(&path)).map(|v| v.len());
        assert_eq!(res.map_err(|e| e.kind()), Err(io::ErrorKind::OutOfMemory));
        return;
    }
    let rt = rt();
    let status = util::bounded(&rt, "read /proc", fs::read("/proc/self/status")).unwrap();
    assert!(status.starts_with(b"Name:"), "{}", String::from_utf8_lossy(&status));
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env("TALLY_FS_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(skip) = stdout.lines().find(|l| l.starts_with("skipped")) {
        println!("{skip}");
    }
    assert!(
        out.status.success(),
        "the child ended with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
    );
}

/// A modification time before 1970 is a negative tv_sec plus a tv_nsec
/// that counts forward: 1.5 s before the epoch is (-2, 0.5 s). It must
/// read as std reads it (once it was the epoch less 2.5 s).
#[test]
fn a_modification_time_before_1970_is_what_std_reports() {
    let _serial = serial();
    let dir = TempDir::new("mtime");
    let path = dir.path("f");
    std::fs::write(&path, b"x").unwrap();
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let t = libc::timespec { tv_sec: -2, tv_nsec: 500_000_000 };
    // SAFETY: a NUL-terminated path and two live timespecs.
    assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0) }, 0);
    let want = std::fs::metadata(&path).unwrap().modified().unwrap();
    if want != SystemTime::UNIX_EPOCH - Duration::from_millis(1500) {
        println!("skipped: this file system does not keep a time before 1970 ({want:?})");
        return;
    }
    let rt = rt();
    let (by_path, by_file) = util::bounded(&rt, "metadata", async {
        let by_path = fs::metadata(&path).await.unwrap();
        let by_file = File::open(&path).await.unwrap().metadata().await.unwrap();
        (by_path.modified().unwrap(), by_file.modified().unwrap())
    });
    assert_eq!(by_path, want);
    assert_eq!(by_file, want);
}
