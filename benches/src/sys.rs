//! The few raw syscalls the benches make, wrapped in one place: eventfds,
//! thread CPU time, the fd limit, and what the machine is.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Turns a `-1` return into the thread's `errno` as an [`io::Error`].
fn cvt<T: Copy + PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// A non-blocking, close-on-exec eventfd with counter 0.
///
/// # Errors
///
/// `EMFILE` when the fd limit is reached; any other `eventfd(2)` error.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `n` to an eventfd's counter (one `write(2)`).
///
/// # Errors
///
/// Any `write(2)` error, including `WouldBlock` if the counter would overflow.
pub fn eventfd_add(fd: RawFd, n: u64) -> io::Result<()> {
    let buf = n.to_ne_bytes();
    // SAFETY: `buf` is 8 valid bytes for the duration of the call.
    cvt(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })?;
    Ok(())
}

/// Reads and resets an eventfd's counter; `Ok(0)` if it was already zero.
///
/// # Errors
///
/// Any `read(2)` error other than `EAGAIN`.
pub fn eventfd_take(fd: RawFd) -> io::Result<u64> {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is 8 writable bytes for the duration of the call.
    match cvt(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }) {
        Ok(_) => Ok(u64::from_ne_bytes(buf)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    cpu_time(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time the whole process has used, all its threads
/// (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn process_cpu_time() -> Duration {
    cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The time on CPU clock `clock`, or zero if it cannot be read.
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    let ret = unsafe { libc::clock_gettime(clock, &mut ts) };
    if ret != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A close-on-exec TCP listener on `addr` with `SO_REUSEPORT` set before
/// `bind`, listening with `backlog`: several of them on one address share
/// its connections, the kernel hashing each to one listener.
///
/// # Errors
///
/// Any `socket(2)`, `setsockopt(2)`, `bind(2)` or `listen(2)` error
/// (`EADDRINUSE` when `addr` is taken by a socket without `SO_REUSEPORT`).
pub fn reuseport_listener(
    addr: std::net::SocketAddrV4,
    backlog: i32,
) -> io::Result<std::net::TcpListener> {
    // SAFETY: socket takes no pointers.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket and is owned by nobody else;
    // the `OwnedFd` closes it on every error path below.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the duration of the call, and its
    // size is passed alongside.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    let raw = tally_reactor::RawAddr::from(std::net::SocketAddr::V4(addr));
    // SAFETY: `raw` holds a sockaddr of `raw.len()` bytes and outlives the
    // call.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), raw.as_ptr(), raw.len()) })?;
    set_backlog(fd.as_raw_fd(), backlog)?;
    Ok(std::net::TcpListener::from(fd))
}

/// Raises the soft `RLIMIT_NOFILE` as far as it goes (first lifting the hard
/// limit to `fs.nr_open` where the process is allowed to) and returns the
/// soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(lim.rlim_max);
    for max in [nr_open.max(lim.rlim_max), lim.rlim_max] {
        let want = libc::rlimit { rlim_cur: max, rlim_max: max };
        // SAFETY: `want` is a valid rlimit; failure (EPERM) changes nothing.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return max;
        }
    }
    lim.rlim_cur
}

/// `n` eventfds, or as many as the fd limit allows (the error says why it
/// stopped short).
pub fn eventfds(n: usize) -> (Vec<OwnedFd>, Option<io::Error>) {
    let mut fds = Vec::with_capacity(n);
    for _ in 0..n {
        match eventfd() {
            Ok(fd) => fds.push(fd),
            Err(e) => return (fds, Some(e)),
        }
    }
    (fds, None)
}

/// Kernel slab memory in bytes (`Slab:` in `/proc/meminfo`): the kernel
/// side of a registration (an eventfd's file, an epoll item) shows here.
pub fn kernel_slab_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("Slab:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What the benches ran on.
#[derive(Clone, Debug)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Cores (hardware threads) this process may use.
    pub cores: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
}

impl Machine {
    /// Reads `/proc/cpuinfo` and `uname(2)`.
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Machine { cpu, cores, kernel: kernel_release() }
    }
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".into();
    }
    // SAFETY: uname NUL-terminates `release` within the array.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

/// Sets `TCP_NODELAY` on socket `fd`.
///
/// # Errors
///
/// Any `setsockopt(2)` error.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the duration of the call, and its
    // size is passed alongside.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Calls `listen(2)` again on a listening socket to set its backlog (std's
/// `TcpListener::bind` picks its own).
///
/// # Errors
///
/// Any `listen(2)` error.
pub fn set_backlog(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen takes no pointers.
    cvt(unsafe { libc::listen(fd, backlog) })?;
    Ok(())
}
