//! The one place the executor's raw syscalls are made (sockets, listening,
//! signalfd): [`syscall!`] turns each failure into an `io::Error`, as the
//! reactor's does.
//!
//! The `unsafe` block lives in the macro; each call site says, in a plain
//! comment beside the call, why its arguments satisfy the libc function's
//! contract.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Calls a libc function and turns a `-1` return into `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every call site passes arguments that satisfy the libc
        // function's contract; see the comment at the call site.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 { Err(std::io::Error::last_os_error()) } else { Ok(res) }
    }};
}
pub(crate) use syscall;

/// A close-on-exec socket of `domain` and `ty` (which may add
/// `SOCK_NONBLOCK`), as `socket(2)` makes it.
pub(crate) fn socket(domain: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    // socket(2) takes no pointers.
    let fd = syscall!(socket(domain, ty | libc::SOCK_CLOEXEC, 0))?;
    // SAFETY: socket just returned `fd`, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
