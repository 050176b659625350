//! The Unix pieces: mio's socket, pipe and `SourceFd` code, and tally's
//! selector in place of mio's epoll one.

/// Runs a libc call that returns a negative value on error, as an
/// `io::Result`.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        #[allow(unused_unsafe)]
        // SAFETY: each use passes arguments that are valid for `$fn` (fds
        // it owns or borrows, pointers to live, correctly sized buffers).
        let res = unsafe { libc::$fn($($arg, )*) };
        if res < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

mod selector;
pub(crate) use self::selector::*;

mod sourcefd;
pub use self::sourcefd::SourceFd;

mod net;

pub(crate) mod pipe;
pub(crate) mod tcp;
pub(crate) mod udp;
pub(crate) mod uds;
