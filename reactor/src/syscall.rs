//! The one place raw syscalls are made outside the ring: each failure becomes
//! an `io::Error`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

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
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // eventfd takes no pointers.
    let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
    // SAFETY: eventfd just returned this fd, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd. A full counter (`EAGAIN`) already means "wake up".
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

/// Checks that `fd` is an open descriptor that can wait for readiness, so
/// that bad input fails at once rather than in a later completion: `EBADF`
/// if it is not open, `PermissionDenied` (where `epoll_ctl` answers `EPERM`)
/// for a regular file, directory or block device, which are always "ready"
/// and would make a multishot poll complete on every turn.
pub(crate) fn check_pollable(fd: RawFd) -> io::Result<()> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // `st` is a valid, writable stat buffer for the duration of the call.
    syscall!(fstat(fd, &mut st))?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFDIR | libc::S_IFBLK => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("fd {fd} is a file, directory or block device: it cannot wait for readiness"),
        )),
        _ => Ok(()),
    }
}
