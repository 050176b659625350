//! The one place raw syscalls are made outside the ring: each failure becomes
//! an `io::Error`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Calls a libc function and turns a `-1` return into `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every call site passes arguments that satisfy the libc
        // function's contract; see the comment at the call site.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 { Err(std::io::Error::last_os_error()) } else { Ok(res) }
    }};
}

/// A non-blocking, close-on-exec eventfd.
// Under loom the remote wake-up is a modelled flag (`remote.rs`).
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // eventfd takes no pointers.
    let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
    // SAFETY: eventfd just returned this fd, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd. A full counter (`EAGAIN`) already means "wake up".
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn eventfd_kick(fd: RawFd) -> io::Result<()> {
    let one: u64 = 1;
    // `one` lives across the call and is 8 bytes, as eventfd requires.
    match syscall!(write(fd, (&one as *const u64).cast(), 8)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// Closes an fd that arrived in a completion nobody will take.
pub(crate) fn close_fd(fd: RawFd) {
    // SAFETY: the caller owns `fd` (a completion produced it) and never uses it again.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// Whether `fd` can wait for readiness, asked of epoll, which refuses
/// (`EPERM`) a file without poll support: the check the reactor runs before
/// it gives up on a poll that keeps ending the moment it is armed, since a
/// healthy fd does that too when the kernel cannot post to a full CQ.
/// `Err` if the probe itself fails (no fds left, `fd` closed).
pub(crate) fn waits_for_readiness(fd: RawFd) -> io::Result<bool> {
    // epoll_create1 takes no pointers.
    let epfd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
    // SAFETY: epoll_create1 just returned this fd, and nothing else owns it.
    let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
    let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0 };
    // `event` is a valid epoll_event for the call; closing `epfd` (on
    // return) drops the watch again.
    match syscall!(epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event)) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Pseudo file systems whose regular files may wait for readiness (kernfs
/// attributes and `cgroup.events`, `/proc/self/mounts`, PSI triggers,
/// tracefs `trace_pipe`, FUSE files with `FUSE_POLL`, ...). Regular files
/// anywhere else (ext4, xfs, btrfs, tmpfs and memfds, ...) never do.
const POLLABLE_FILE_SYSTEMS: [i64; 9] = [
    0x9fa0,      // PROC_SUPER_MAGIC
    0x6265_6572, // SYSFS_MAGIC
    0x0027_e0eb, // CGROUP_SUPER_MAGIC
    0x6367_7270, // CGROUP2_SUPER_MAGIC
    0x6462_6720, // DEBUGFS_MAGIC
    0x7472_6163, // TRACEFS_MAGIC
    0x7363_6673, // SECURITYFS_MAGIC
    0x6265_6570, // CONFIGFS_MAGIC
    0x6573_5546, // FUSE_SUPER_MAGIC
];

/// Checks that `fd` is an open descriptor that can wait for readiness, so
/// that bad input fails at once rather than in a later completion: `EBADF`
/// if it is not open, `PermissionDenied` (where `epoll_ctl` answers `EPERM`)
/// for a directory, a block device, or a regular file outside the pseudo
/// file systems above, which are always "ready" and would make a multishot
/// poll complete on every turn. (Anything else that cannot wait, say
/// `/dev/null`, is caught at run time by the reactor.)
pub(crate) fn check_pollable(fd: RawFd) -> io::Result<()> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // `st` is a valid, writable stat buffer for the duration of the call.
    syscall!(fstat(fd, &mut st))?;
    let refuse = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR | libc::S_IFBLK => true,
        libc::S_IFREG => {
            // SAFETY: `statfs` is plain old data; all-zero is a valid value.
            let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
            // `fs` is a valid, writable statfs buffer for the call.
            syscall!(fstatfs(fd, &mut fs))?;
            !POLLABLE_FILE_SYSTEMS.contains(&(fs.f_type as i64))
        }
        _ => false,
    };
    if refuse {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("fd {fd} is a file, directory or block device: it cannot wait for readiness"),
        ));
    }
    Ok(())
}
