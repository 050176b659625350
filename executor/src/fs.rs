//! Files: [`File`], [`OpenOptions`], [`Metadata`], and the path helpers
//! [`read`], [`write()`], [`remove_file`], [`remove_dir`], [`rename`], [`create_dir`] and
//! [`metadata`].
//!
//! # Owned buffers
//!
//! Positional I/O takes a `Vec<u8>` by value and hands it back with the
//! result, as tokio-uring and monoio do: `read_at(buf, pos)` reads into the
//! vector's spare capacity (`capacity - len` bytes) and returns it with
//! the bytes read appended; `write_at(buf, pos)` writes `buf[..]`. The
//! kernel may write into a read's buffer until the read's final
//! completion, so the buffer lives in the reactor's operation slab from
//! submission on: a read or write future dropped before it completes
//! cancels the operation, and the reactor frees the buffer only once the
//! kernel has let go of it. A submission the reactor refuses hands the
//! caller's buffer back with the error, never an empty one.
//!
//! # Backends
//!
//! * **io_uring.** Reads and writes are ring operations, and so are open,
//!   fsync, statx, unlink, rename and mkdir when the kernel has them
//!   ([`Features::file_ops`](tally_reactor::Features::file_ops)), and
//!   `set_len` with [`Features::ftruncate`](tally_reactor::Features::ftruncate).
//!   Many reads in flight on one file share its one registration, which
//!   wakes every waiting call (whichever task it is in); whichever drains
//!   the registration hands the others their results.
//! * **epoll**, which cannot wait on a regular file. A positional read or
//!   write is first tried on the reactor thread as a non-waiting
//!   `preadv2(2)`/`pwritev2(2)` (`RWF_NOWAIT`) when the future is first
//!   polled: a read the page cache answers costs one syscall and no
//!   thread hop. One that would wait (data not cached, a write throttled
//!   or allocating blocks, or a file system without non-waiting buffered
//!   writes) is made again on the blocking pool
//!   ([`task::spawn_blocking`](crate::task::spawn_blocking)), so the
//!   reactor thread never waits on a disk. A non-waiting read may return
//!   fewer bytes than asked, the cached part, as any `read_at` may
//!   ([`read_exact_at`](File::read_exact_at) loops). Everything else
//!   (open, fsync, statx, unlink, rename, mkdir, ftruncate) runs on the
//!   blocking pool.
//!
//! Everything here runs inside a tally executor, and panics outside one
//! (the futures when first polled), as tally's sockets do.
//!
//! A [`File`] is closed when dropped: on io_uring through the ring, after
//! every operation already queued for it; on epoll (or while a blocking
//! job still uses the fd) by the last owner of the fd.
//!
//! # Example
//!
//! ```
//! let rt = tally::LocalReactor::new().unwrap();
//! let dir = std::env::temp_dir().join(format!("tally-fs-doc-{}", std::process::id()));
//! rt.block_on(async {
//!     tally::fs::create_dir(&dir).await.unwrap();
//!     let path = dir.join("hello");
//!     tally::fs::write(&path, b"hello, file").await.unwrap();
//!     let file = tally::fs::File::open(&path).await.unwrap();
//!     let (n, buf) = file.read_at(Vec::with_capacity(5), 7).await;
//!     assert_eq!((n.unwrap(), &buf[..]), (4, &b"file"[..]));
//!     assert_eq!(file.metadata().await.unwrap().len(), 11);
//!     tally::fs::remove_file(&path).await.unwrap();
//!     tally::fs::remove_dir(&dir).await.unwrap();
//! });
//! ```

use std::cell::{OnceCell, RefCell};
use std::ffi::CString;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tally_reactor::{Backend, Cancel, Op, OpId, PacketList, Registration, STATX_BYTES};

use crate::context;
use crate::sys::syscall;

/// The status bits every metadata call asks statx for.
const STATX_MASK: u32 = libc::STATX_BASIC_STATS;

/// Options for opening a file, as `std::fs::OpenOptions` has them.
///
/// ```
/// # let rt = tally::LocalReactor::new().unwrap();
/// # let path = std::env::temp_dir().join(format!("tally-open-doc-{}", std::process::id()));
/// # rt.block_on(async {
/// let file = tally::fs::OpenOptions::new().write(true).create(true).open(&path).await.unwrap();
/// # drop(file);
/// # tally::fs::remove_file(&path).await.unwrap();
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// No access asked for yet; new files get mode `0o666` (less the umask).
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: 0o666,
        }
    }

    /// Opens for reading.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.read = on;
        self
    }

    /// Opens for writing.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.write = on;
        self
    }

    /// Opens for appending (`O_APPEND`; implies writing).
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.append = on;
        self
    }

    /// Truncates the file to nothing (`O_TRUNC`; needs `write`).
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.truncate = on;
        self
    }

    /// Creates the file if it does not exist (needs `write` or `append`).
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.create = on;
        self
    }

    /// Creates the file, failing if it exists (`O_CREAT | O_EXCL`).
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.create_new = on;
        self
    }

    /// The permission bits a new file gets (less the umask).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// The `open(2)` flags these options mean, with std's rules.
    fn flags(&self) -> io::Result<i32> {
        let invalid = |what| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        let access = match (self.read, self.write || self.append) {
            (true, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
            (false, false) => return invalid("open: neither read, write nor append asked for"),
        };
        let writes = self.write || self.append;
        if (self.create || self.create_new || self.truncate) && !writes {
            return invalid("open: create and truncate need write or append");
        }
        if self.truncate && self.append && !self.create_new {
            return invalid("open: truncate and append together");
        }
        let mut flags = access | libc::O_CLOEXEC;
        if self.append {
            flags |= libc::O_APPEND;
        }
        if self.truncate {
            flags |= libc::O_TRUNC;
        }
        if self.create_new {
            flags |= libc::O_CREAT | libc::O_EXCL;
        } else if self.create {
            flags |= libc::O_CREAT;
        }
        Ok(flags)
    }

    /// Opens `path` with these options.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for options std refuses too (say `create` without
    /// `write`) or a path with a NUL byte; otherwise what `open(2)`
    /// answers (`NotFound` for `ENOENT`, ...).
    pub async fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let flags = self.flags()?;
        let path = c_path(path.as_ref())?;
        let mode = self.mode;
        let fd = if ring_file_ops() {
            let ring = RingIo::new(context::current().reactor.register());
            let (c, _) = ring.run(Op::open_at(libc::AT_FDCWD, path, flags, mode)).await;
            let c = c?;
            check(c.result)?;
            c.fd.ok_or_else(|| io::Error::other("an open completion without its fd"))?
        } else {
            blocking(move || {
                // openat(2) reads the NUL-terminated path, which outlives the call.
                let fd = syscall!(openat(libc::AT_FDCWD, path.as_ptr(), flags, mode))?;
                // SAFETY: openat just returned `fd`, and nothing else owns it.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            })
            .await?
        };
        File::from_fd(fd)
    }
}

/// An open file, read and written at explicit offsets with owned buffers.
///
/// Any number of operations may be in flight on one file at once (share it
/// with `Rc<File>` between tasks); each call completes independently.
pub struct File {
    /// Shared with blocking jobs that use it (on epoll), so that a file
    /// dropped while one runs is closed after it, never under it. `None`
    /// only while dropping.
    fd: Option<Arc<OwnedFd>>,
    /// The ring's side, on io_uring.
    ring: Option<RingIo>,
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("fd", &self.raw_fd())
            .field("ring", &self.ring.is_some())
            .finish()
    }
}

impl File {
    /// Opens `path` for reading.
    ///
    /// # Errors
    ///
    /// As [`OpenOptions::open`]: `NotFound` for a missing file, ...
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().read(true).open(path).await
    }

    /// Opens `path` for writing, creating it or truncating it.
    ///
    /// # Errors
    ///
    /// As [`OpenOptions::open`].
    pub async fn create(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().write(true).create(true).truncate(true).open(path).await
    }

    /// Wraps an open file.
    ///
    /// # Errors
    ///
    /// None today; fallible so that a future check can be added.
    ///
    /// # Panics
    ///
    /// Panics outside a running tally executor.
    pub fn from_fd(fd: OwnedFd) -> io::Result<File> {
        let exec = context::current();
        let ring = match exec.reactor.metrics().backend {
            Backend::Epoll => None,
            _ => Some(RingIo::new(exec.reactor.register())),
        };
        Ok(File { fd: Some(Arc::new(fd)), ring })
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// The ring's side, if file operations (not only reads and writes)
    /// run on it.
    fn ring_file_ops(&self) -> Option<&RingIo> {
        self.ring.as_ref().filter(|_| ring_file_ops())
    }

    /// Reads into the spare capacity of `buf` (`capacity - len` bytes) at
    /// offset `pos`, and hands `buf` back with the bytes read appended. A
    /// read at or past the end of the file reads 0 bytes.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for `pos` past `i64::MAX`; otherwise what `pread(2)`
    /// answers: `EISDIR` for a directory, `EBADF` for a file not open for
    /// reading, ... The buffer comes back either way.
    pub async fn read_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<usize>, Vec<u8>) {
        let Some(ring) = &self.ring else {
            // Not in the page cache (or the file system cannot tell): the
            // read goes to the disk, on the blocking pool.
            return self.nowait_or_pool(buf, pos, pread_now).await;
        };
        // To the ring, offset -1 (u64::MAX) means the file position: any
        // offset past i64::MAX is refused here, as pread(2) refuses it.
        if let Err(e) = offset(pos) {
            return (Err(e), buf);
        }
        let len = buf.len();
        let (res, back) = ring.run(Op::read_at(self.raw_fd(), buf, pos)).await;
        let buf = back.unwrap_or_default();
        let res = res.and_then(|c| check(c.result)).map(|_| buf.len() - len);
        (res, buf)
    }

    /// Reads until the spare capacity of `buf` is full, at offset `pos`
    /// on, and hands `buf` back with the bytes appended.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` if the file ends first (the bytes before the end
    /// are in the buffer); otherwise as [`read_at`](Self::read_at).
    pub async fn read_exact_at(&self, mut buf: Vec<u8>, mut pos: u64) -> (io::Result<()>, Vec<u8>) {
        while buf.len() < buf.capacity() {
            let (res, back) = self.read_at(buf, pos).await;
            buf = back;
            match res {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "file ended first");
                    return (Err(e), buf);
                }
                Ok(n) => pos += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Writes `buf` (one `pwrite(2)`, so possibly short) at offset `pos`,
    /// and hands it back unchanged.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for `pos` past `i64::MAX`; otherwise what
    /// `pwrite(2)` answers: `EBADF` for a file not open for writing,
    /// `ENOSPC`, ... The buffer comes back either way.
    pub async fn write_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<usize>, Vec<u8>) {
        let Some(ring) = &self.ring else {
            // The write would wait (dirty-page throttling, block
            // allocation), or the file system has no non-waiting buffered
            // writes: it runs on the blocking pool.
            return self
                .nowait_or_pool(buf, pos, |fd, buf, pos, flags| pwrite_now(fd, buf, pos, flags))
                .await;
        };
        // As in `read_at`: never the file position.
        if let Err(e) = offset(pos) {
            return (Err(e), buf);
        }
        let (res, back) = ring.run(Op::write_at(self.raw_fd(), buf, pos)).await;
        let buf = back.unwrap_or_default();
        (res.and_then(|c| check(c.result)).map(|n| n as usize), buf)
    }

    /// Writes all of `buf` at offset `pos`, and hands it back unchanged.
    ///
    /// # Errors
    ///
    /// `WriteZero` if a write takes nothing; otherwise as
    /// [`write_at`](Self::write_at).
    pub async fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<()>, Vec<u8>) {
        let (res, mut buf) = self.write_at(buf, pos).await;
        let mut done = match res {
            Ok(n) if n == buf.len() => return (Ok(()), buf),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return (Err(e), buf),
        };
        // A short write (rare on a regular file): the rest goes out from a
        // second buffer, so that the caller's comes back as it was.
        let mut rest = buf.split_off(done);
        let mut result = Ok(());
        while !rest.is_empty() {
            let (res, back) = self.write_at(rest, pos + done as u64).await;
            rest = back;
            match res {
                Ok(0) => {
                    result = Err(io::Error::new(io::ErrorKind::WriteZero, "write took nothing"));
                    break;
                }
                Ok(n) => {
                    buf.extend_from_slice(&rest[..n]);
                    rest.drain(..n);
                    done += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        buf.extend_from_slice(&rest);
        (result, buf)
    }

    /// Flushes the file's data and metadata to storage (`fsync(2)`).
    ///
    /// # Errors
    ///
    /// What `fsync(2)` answers (`EIO`, ...).
    pub async fn sync_all(&self) -> io::Result<()> {
        self.sync(false).await
    }

    /// Flushes the file's data, and only the metadata needed to read it
    /// back (`fdatasync(2)`).
    ///
    /// # Errors
    ///
    /// What `fdatasync(2)` answers.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.sync(true).await
    }

    async fn sync(&self, datasync: bool) -> io::Result<()> {
        if let Some(ring) = self.ring_file_ops() {
            let (c, _) = ring.run(Op::fsync(self.raw_fd(), datasync)).await;
            return check(c?.result).map(drop);
        }
        self.with_fd(move |fd| {
            // fsync(2) and fdatasync(2) take no pointers.
            if datasync { syscall!(fdatasync(fd)) } else { syscall!(fsync(fd)) }.map(drop)
        })
        .await
    }

    /// The file's status, by `statx(2)` on its fd.
    ///
    /// # Errors
    ///
    /// What `statx(2)` answers.
    pub async fn metadata(&self) -> io::Result<Metadata> {
        let empty = CString::default();
        if let Some(ring) = self.ring_file_ops() {
            return ring_statx(ring, self.raw_fd(), empty, libc::AT_EMPTY_PATH).await;
        }
        self.with_fd(move |fd| statx_now(fd, &empty, libc::AT_EMPTY_PATH)).await
    }

    /// Truncates or extends the file to `len` bytes (`ftruncate(2)`); an
    /// extension reads as zeros.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a file not open for writing, `EFBIG` past what the
    /// file system holds, ...
    pub async fn set_len(&self, len: u64) -> io::Result<()> {
        // The same check on both backends, before anything is submitted.
        let off = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length past i64::MAX"))?;
        let features = context::current().reactor.features();
        if let Some(ring) = self.ring.as_ref().filter(|_| features.ftruncate) {
            let (c, _) = ring.run(Op::ftruncate(self.raw_fd(), len)).await;
            return check(c?.result).map(drop);
        }
        let len = off;
        // ftruncate(2) takes no pointers.
        self.with_fd(move |fd| syscall!(ftruncate(fd, len)).map(drop)).await
    }

    /// On epoll: `io` (`pread_now` or `pwrite_now`) made here with
    /// `RWF_NOWAIT`, and made again without it on the blocking pool if it
    /// would wait; `buf` comes back either way.
    async fn nowait_or_pool(
        &self,
        mut buf: Vec<u8>,
        pos: u64,
        io: fn(RawFd, &mut Vec<u8>, u64, i32) -> io::Result<usize>,
    ) -> (io::Result<usize>, Vec<u8>) {
        match io(self.raw_fd(), &mut buf, pos, libc::RWF_NOWAIT) {
            Err(e) if would_block(&e) => {}
            res => return (res, buf),
        }
        let Some(fd) = self.fd.clone() else {
            return (Err(io::Error::from_raw_os_error(libc::EBADF)), buf);
        };
        let job = crate::task::spawn_blocking(move || {
            let res = io(fd.as_raw_fd(), &mut buf, pos, 0);
            (res, buf)
        });
        job.await.unwrap_or_else(|e| (Err(io::Error::other(e)), Vec::new()))
    }

    /// Runs `f` on the fd on the blocking pool; the fd stays open until
    /// `f` returns, even if the file is dropped first.
    async fn with_fd<T: Send + 'static>(
        &self,
        f: impl FnOnce(RawFd) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let fd = self.fd.clone().ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        blocking(move || f(fd.as_raw_fd())).await
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.raw_fd()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        // Only the last owner closes: a blocking job may still use the fd.
        let Ok(fd) = Arc::try_unwrap(fd) else { return };
        if let Some(ring) = &self.ring {
            // As `net::stream::close_after_queued`: the close runs after
            // every SQE already queued for the fd, so those never reach a
            // file that reuses the number. A refused op closes it on drop.
            drop(ring.reg.submit(Op::close(fd)));
        }
    }
}

/// What a file's status says, from `statx(2)`.
#[derive(Clone, Debug)]
pub struct Metadata {
    len: u64,
    mode: u32,
    modified: Option<SystemTime>,
}

impl Metadata {
    /// The size in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// Whether it is a symbolic link (only [`File::metadata`] on a link
    /// opened with `O_PATH` sees one: [`metadata`] follows links).
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }

    /// The permission bits (`st_mode & 0o7777`).
    pub fn mode(&self) -> u32 {
        self.mode & 0o7777
    }

    /// The permissions, as std represents them.
    pub fn permissions(&self) -> std::fs::Permissions {
        std::os::unix::fs::PermissionsExt::from_mode(self.mode())
    }

    /// The last modification time.
    ///
    /// # Errors
    ///
    /// `Unsupported` if the file system did not report one (or reported
    /// one `SystemTime` cannot hold).
    pub fn modified(&self) -> io::Result<SystemTime> {
        self.modified.ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "no modification time reported")
        })
    }

    /// Decodes the `struct statx` in `bytes`.
    fn from_statx(bytes: &[u8]) -> io::Result<Metadata> {
        if bytes.len() < STATX_BYTES {
            return Err(io::Error::other("statx wrote no status"));
        }
        // SAFETY: `bytes` holds a whole `struct statx` (checked above),
        // which is plain old data; the read is unaligned-safe.
        let st = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<libc::statx>()) };
        let modified = (st.stx_mask & libc::STATX_MTIME != 0).then(|| {
            // As std decodes it: whole seconds from the epoch (before it if
            // negative), then the nanoseconds, which always count forward.
            let t = st.stx_mtime;
            let secs = Duration::from_secs(t.tv_sec.unsigned_abs());
            let whole = if t.tv_sec >= 0 {
                SystemTime::UNIX_EPOCH.checked_add(secs)
            } else {
                SystemTime::UNIX_EPOCH.checked_sub(secs)
            };
            whole?.checked_add(Duration::from_nanos(u64::from(t.tv_nsec.min(999_999_999))))
        });
        let modified = modified.flatten();
        Ok(Metadata { len: st.stx_size, mode: u32::from(st.stx_mode), modified })
    }
}

/// Reads the whole file at `path`.
///
/// # Errors
///
/// `OutOfMemory` if the buffer for the file's size cannot be allocated;
/// otherwise as [`File::open`] and [`File::read_at`].
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let file = File::open(path).await?;
    // The size is a hint (files in /proc say 0): read until a read says 0.
    // A size the allocator cannot give (a huge sparse file) is an
    // `OutOfMemory` error, as std's `fs::read` has it, not an abort.
    let hint = file.metadata().await.map_or(0, |m| m.len());
    let mut buf = Vec::new();
    let first = usize::try_from(hint).unwrap_or(usize::MAX).saturating_add(1).max(64);
    buf.try_reserve_exact(first).map_err(out_of_memory)?;
    loop {
        if buf.len() == buf.capacity() {
            // The file grew past its size: grow by doubling.
            buf.try_reserve(buf.capacity().max(8 * 1024)).map_err(out_of_memory)?;
        }
        let pos = buf.len() as u64;
        let (res, back) = file.read_at(buf, pos).await;
        buf = back;
        match res {
            Ok(0) => return Ok(buf),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The error for a buffer the allocator refused.
fn out_of_memory(e: std::collections::TryReserveError) -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, e)
}

/// Writes `contents` to the file at `path`, creating it or replacing what
/// it held.
///
/// # Errors
///
/// As [`File::create`] and [`File::write_all_at`].
pub async fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
    let file = File::create(path).await?;
    file.write_all_at(contents.as_ref().to_vec(), 0).await.0
}

/// Removes the file at `path` (`unlink(2)`).
///
/// # Errors
///
/// `NotFound`, `EISDIR` for a directory, ...
pub async fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    let path = c_path(path.as_ref())?;
    path_op(Op::unlink_at(libc::AT_FDCWD, path.clone(), 0), move || {
        // unlinkat(2) reads the NUL-terminated path, which outlives the call.
        syscall!(unlinkat(libc::AT_FDCWD, path.as_ptr(), 0)).map(drop)
    })
    .await
}

/// Removes the empty directory at `path` (`rmdir(2)`).
///
/// # Errors
///
/// `NotFound`, `ENOTEMPTY`, ...
pub async fn remove_dir(path: impl AsRef<Path>) -> io::Result<()> {
    let path = c_path(path.as_ref())?;
    let flags = libc::AT_REMOVEDIR;
    path_op(Op::unlink_at(libc::AT_FDCWD, path.clone(), flags), move || {
        // As in `remove_file`.
        syscall!(unlinkat(libc::AT_FDCWD, path.as_ptr(), flags)).map(drop)
    })
    .await
}

/// Renames `from` to `to`, replacing `to` if it exists (`rename(2)`).
///
/// # Errors
///
/// `NotFound`, `EXDEV` across file systems, ...
pub async fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    let (from, to) = (c_path(from.as_ref())?, c_path(to.as_ref())?);
    let op = Op::rename_at(libc::AT_FDCWD, from.clone(), libc::AT_FDCWD, to.clone(), 0);
    path_op(op, move || {
        // renameat(2) reads the two NUL-terminated paths, which outlive the call.
        syscall!(renameat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr())).map(drop)
    })
    .await
}

/// Makes the directory `path`, mode `0o777` less the umask (`mkdir(2)`).
///
/// # Errors
///
/// `AlreadyExists`, `NotFound` for a missing parent, ...
pub async fn create_dir(path: impl AsRef<Path>) -> io::Result<()> {
    let path = c_path(path.as_ref())?;
    path_op(Op::mkdir_at(libc::AT_FDCWD, path.clone(), 0o777), move || {
        // mkdirat(2) reads the NUL-terminated path, which outlives the call.
        syscall!(mkdirat(libc::AT_FDCWD, path.as_ptr(), 0o777)).map(drop)
    })
    .await
}

/// The status of `path`, following symbolic links (`statx(2)`).
///
/// # Errors
///
/// `NotFound`, ...
pub async fn metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    let path = c_path(path.as_ref())?;
    if ring_file_ops() {
        let ring = RingIo::new(context::current().reactor.register());
        return ring_statx(&ring, libc::AT_FDCWD, path, 0).await;
    }
    blocking(move || statx_now(libc::AT_FDCWD, &path, 0)).await
}

/// Whether the file operations run on the ring (io_uring with
/// `file_ops`), rather than on the blocking pool.
fn ring_file_ops() -> bool {
    context::current().reactor.features().file_ops
}

/// A path operation with no result but success: `op` on the ring when it
/// can, else `blocking` on the pool.
async fn path_op(
    op: Op,
    blocking_call: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<()> {
    if ring_file_ops() {
        drop(blocking_call);
        let ring = RingIo::new(context::current().reactor.register());
        return check(ring.run(op).await.0?.result).map(drop);
    }
    drop(op);
    blocking(blocking_call).await
}

/// A statx through `ring`, decoded.
async fn ring_statx(ring: &RingIo, dir: RawFd, path: CString, flags: i32) -> io::Result<Metadata> {
    let op = Op::statx(dir, path, flags | libc::AT_STATX_SYNC_AS_STAT, STATX_MASK, Vec::new());
    let (c, buf) = ring.run(op).await;
    check(c?.result)?;
    Metadata::from_statx(&buf.unwrap_or_default())
}

/// A statx made now (on the blocking pool), decoded.
fn statx_now(dir: RawFd, path: &CString, flags: i32) -> io::Result<Metadata> {
    let mut buf = Vec::<u8>::with_capacity(STATX_BYTES);
    let out = buf.spare_capacity_mut().as_mut_ptr().cast::<libc::statx>();
    let flags = flags | libc::AT_STATX_SYNC_AS_STAT;
    // statx(2) reads the NUL-terminated path and writes one `struct statx`
    // into `out`, which has room for it.
    syscall!(statx(dir, path.as_ptr(), flags, STATX_MASK, out))?;
    // SAFETY: the successful statx wrote those bytes.
    unsafe { buf.set_len(STATX_BYTES) };
    Metadata::from_statx(&buf)
}

/// `f` on the blocking pool, its panic an `io::Error`.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    crate::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

/// Whether a non-waiting `preadv2`/`pwritev2` must be made again on the
/// blocking pool: it would wait (`EAGAIN`), the file system cannot do it
/// without waiting (`EOPNOTSUPP`), or the kernel has no such call
/// (`ENOSYS`, before 4.6).
fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ENOSYS))
}

/// One `preadv2(2)` into `buf`'s spare capacity, now (epoll); `flags` is 0
/// (a plain `pread`) or `RWF_NOWAIT` (`EAGAIN` for data not in the page
/// cache, or a short read of what is).
fn pread_now(fd: RawFd, buf: &mut Vec<u8>, pos: u64, flags: i32) -> io::Result<usize> {
    let pos = offset(pos)?;
    let spare = buf.spare_capacity_mut();
    let iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: spare.len() };
    loop {
        // preadv2(2) writes at most `iov_len` bytes into the spare capacity
        // that the one iovec describes.
        match syscall!(preadv2(fd, &iov, 1, pos, flags)) {
            Ok(n) => {
                let n = n as usize;
                // SAFETY: the kernel initialised `n` bytes after `len`, and
                // `n` is at most the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One `pwritev2(2)` of `buf`, now (epoll); `flags` as for
/// [`pread_now`].
fn pwrite_now(fd: RawFd, buf: &[u8], pos: u64, flags: i32) -> io::Result<usize> {
    let pos = offset(pos)?;
    let iov = libc::iovec { iov_base: buf.as_ptr().cast_mut().cast(), iov_len: buf.len() };
    loop {
        // pwritev2(2) reads `iov_len` bytes from the live slice the one
        // iovec describes.
        match syscall!(pwritev2(fd, &iov, 1, pos, flags)) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `pos` as an `off_t`; `InvalidInput` past `i64::MAX`, on both backends.
fn offset(pos: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(pos)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past i64::MAX"))
}

/// `path` as the kernel reads it.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// A completion's result as an `io::Result`.
fn check(result: i32) -> io::Result<u32> {
    if result < 0 { Err(io::Error::from_raw_os_error(-result)) } else { Ok(result as u32) }
}

/// What a finished ring operation reports.
struct Completed {
    result: i32,
    /// An open's new fd, taken from its packet by whoever drained it.
    fd: Option<OwnedFd>,
}

/// A file's side of the ring: one registration that every operation on the
/// file shares, and the table through which concurrent calls hand each
/// other their completions.
///
/// The registration keeps one waker, and any call may be the one to drain
/// it. So the registration is always given the file's [`Fan`], which
/// wakes every call that waits: whichever completion arrives, its own
/// call's task runs, even while the other calls' tasks are busy elsewhere.
/// Whoever drains stores every completion it finds in its op's entry,
/// where that call finds it when it runs.
struct RingIo {
    reg: Registration,
    table: RefCell<OpTable>,
    /// The fan, and a waker made from it once, made at the first wait.
    fan: OnceCell<(Arc<Fan>, Waker)>,
}

#[derive(Default)]
struct OpTable {
    /// Calls in flight, each keyed by its op's full token (slot and
    /// generation: a bufferless op leaves the reactor's slab at its
    /// completion, and a later op may take its slot while the call still
    /// waits), searched linearly: a file has a few in flight (W8 has 64).
    entries: Vec<Entry>,
    /// Scratch for drains, keeping its allocation.
    list: PacketList,
}

struct Entry {
    op: OpId,
    done: Option<Completed>,
}

impl OpTable {
    fn entry_mut(&mut self, op: OpId) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.op == op)
    }

    /// Adds `op`'s entry; false (and nothing changed) if it has one.
    fn insert(&mut self, op: OpId) -> bool {
        if self.entries.iter().any(|e| e.op == op) {
            return false;
        }
        self.entries.push(Entry { op, done: None });
        true
    }

    /// Takes `op`'s entry out.
    fn remove(&mut self, op: OpId) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.op == op)?;
        Some(self.entries.swap_remove(i))
    }
}

/// The wakers of a file's waiting calls, each beside its op: the waker
/// the file's registration is given. Waking it wakes (and takes) every
/// one; each call puts its waker back before it next waits, and takes it
/// out when it finishes or is dropped, so the list holds only calls that
/// wait. Its storage is kept from wake to wake.
#[derive(Default)]
struct Fan {
    wakers: Mutex<Vec<(OpId, Waker)>>,
}

impl Fan {
    /// Keeps `waker` as `op`'s.
    fn set(&self, op: OpId, waker: &Waker) {
        let mut wakers = self.wakers.lock();
        match wakers.iter_mut().find(|(o, _)| *o == op) {
            Some((_, w)) if w.will_wake(waker) => {}
            Some((_, w)) => {
                let old = std::mem::replace(w, waker.clone());
                drop(wakers);
                drop(old);
            }
            None => wakers.push((op, waker.clone())),
        }
    }

    /// Drops `op`'s waker, if kept.
    fn forget(&self, op: OpId) {
        let mut wakers = self.wakers.lock();
        let Some(i) = wakers.iter().position(|(o, _)| *o == op) else { return };
        let (_, old) = wakers.swap_remove(i);
        drop(wakers);
        drop(old);
    }
}

impl Wake for Fan {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Woken outside the lock: a wake may drop a task, whose dropped
        // calls forget their wakers here.
        let mut taken = std::mem::take(&mut *self.wakers.lock());
        for (_, waker) in taken.drain(..) {
            waker.wake();
        }
        let mut wakers = self.wakers.lock();
        if taken.capacity() > wakers.capacity() {
            // Give the list its storage back (and keep what a wake added).
            taken.append(&mut wakers);
            std::mem::swap(&mut *wakers, &mut taken);
        }
        drop(wakers);
        drop(taken);
    }
}

impl RingIo {
    fn new(reg: Registration) -> RingIo {
        RingIo { reg, table: RefCell::new(OpTable::default()), fan: OnceCell::new() }
    }

    /// Submits `op` and waits for its completion; hands back the op's
    /// buffer (reads with the bytes read appended), or, if the reactor
    /// refuses the op, the error and the buffer as it was.
    async fn run(&self, op: Op) -> (io::Result<Completed>, Option<Vec<u8>>) {
        let id = match self.reg.submit_or_return(op) {
            Ok(id) => id,
            Err((e, op)) => return (Err(e), op.into_buffer()),
        };
        if !self.table.borrow_mut().insert(id) {
            // Tokens carry a generation, so a live op's is never handed
            // out again; were it, the other call's entry stays its own.
            self.abandon(id);
            return (Err(io::Error::other("the reactor handed out a live op's token")), None);
        }
        let mut guard = OpGuard { ring: self, op: Some(id) };
        let done = poll_fn(|cx| self.poll(id, cx)).await;
        guard.op = None;
        (Ok(done), self.reg.reclaim(id))
    }

    /// Cancels `op`, which has no result in the table, and frees what it
    /// holds. The reactor keeps the op's buffer until the kernel is done
    /// with it; what arrived first comes back lent, and is freed here (an
    /// open's fd, then the buffer).
    fn abandon(&self, op: OpId) {
        match self.reg.cancel(op) {
            Cancel::AlreadyCompleted(list) | Cancel::Cancelled(list) => {
                for packet in list {
                    if let Some(c) = packet.as_completion() {
                        drop(self.reg.take_fd(&c));
                    }
                }
            }
            Cancel::NotFound => {}
        }
        drop(self.reg.reclaim(op));
    }

    /// Takes `op`'s entry out of the table, and its waker out of the fan.
    fn remove(&self, op: OpId) -> Option<Entry> {
        let entry = self.table.borrow_mut().remove(op);
        if let Some((fan, _)) = self.fan.get() {
            fan.forget(op);
        }
        entry
    }

    /// Ready with `op`'s completion, once a drain (this one or another
    /// call's) has found it.
    fn poll(&self, op: OpId, cx: &mut Context<'_>) -> Poll<Completed> {
        loop {
            let mut table = self.table.borrow_mut();
            if table.entry_mut(op).is_some_and(|e| e.done.is_some()) {
                drop(table);
                let done = self.remove(op).and_then(|e| e.done);
                return Poll::Ready(done.expect("checked above"));
            }
            let mut list = std::mem::take(&mut table.list);
            drop(table);
            // This call's waker goes in the fan before the drain, so that
            // a completion from here on wakes it.
            let (fan, fan_waker) = self.fan.get_or_init(|| {
                let fan = Arc::new(Fan::default());
                (fan.clone(), Waker::from(fan))
            });
            fan.set(op, cx.waker());
            let polled = self.reg.poll_drain_into(&mut Context::from_waker(fan_waker), &mut list);
            let mut table = self.table.borrow_mut();
            if polled.is_pending() {
                table.list = list;
                return Poll::Pending;
            }
            for packet in list.drain(..) {
                let Some(c) = packet.as_completion() else { continue };
                // An open's fd is lent only until the next drain: take it now.
                let fd = c.accepted_fd().and_then(|_| self.reg.take_fd(&c));
                let Some(entry) = table.entry_mut(c.op()) else { continue };
                if entry.done.is_none() {
                    // Its call's task was woken by the fan when the
                    // completion arrived, if it waited then.
                    entry.done = Some(Completed { result: c.result, fd });
                }
            }
            table.list = list;
        }
    }
}

/// Cancels a call's op when its future is dropped before the op completed,
/// and frees what a completed one holds; either way takes the call's entry
/// and waker out.
struct OpGuard<'a> {
    ring: &'a RingIo,
    op: Option<OpId>,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        let Some(op) = self.op else { return };
        if self.ring.remove(op).is_some_and(|e| e.done.is_some()) {
            drop(self.ring.reg.reclaim(op));
        } else {
            self.ring.abandon(op);
        }
    }
}
