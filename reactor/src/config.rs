//! Settings fixed when a reactor is built, and the tokens the reactor
//! reserves for itself: a leaf that every layer may read.

use std::fmt;

use tally_packets::Token;

/// `user_data` of the remote wake-up read on the eventfd.
pub(crate) const WAKE_TOKEN: Token = Token::reserved(0);
/// `user_data` of cancel requests, whose own completions are ignored.
pub(crate) const CANCEL_TOKEN: u64 = Token::reserved(1).as_u64();

/// Settings fixed when the reactor is built.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) entries: u32,
    pub(crate) queue_cap: usize,
    pub(crate) user_cap: usize,
    pub(crate) buf_cap: u32,
    pub(crate) defer_taskrun: bool,
    pub(crate) coop_taskrun: bool,
    pub(crate) assert_drained: bool,
    pub(crate) backend: Backend,
}

/// Which backend a reactor runs on (in [`Metrics`](crate::Metrics)), or
/// should (in [`Builder::backend`](crate::Builder::backend)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// io_uring if the ring can be set up with the settings the reactor
    /// will use and has the opcodes tally needs; epoll otherwise. The
    /// environment variable `TALLY_BACKEND` (`io_uring` or `epoll`)
    /// overrides it.
    #[default]
    Auto,
    /// io_uring, or an error saying why it cannot start.
    IoUring,
    /// epoll: readiness, with the operations done in user space.
    Epoll,
}

impl Backend {
    /// `"auto"`, `"io_uring"` or `"epoll"`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }

    /// `Auto` resolved against `TALLY_BACKEND`: an explicit choice stays.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `TALLY_BACKEND` is set to anything but
    /// `io_uring`, `epoll` or `auto`.
    pub(crate) fn resolve(self) -> std::io::Result<Backend> {
        if self != Backend::Auto {
            return Ok(self);
        }
        match std::env::var("TALLY_BACKEND").as_deref() {
            Err(_) | Ok("" | "auto") => Ok(Backend::Auto),
            Ok("io_uring" | "io-uring" | "uring") => Ok(Backend::IoUring),
            Ok("epoll") => Ok(Backend::Epoll),
            Ok(other) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("TALLY_BACKEND={other:?}: expected io_uring, epoll or auto"),
            )),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why `Backend::Auto` fell back to epoll: which step of the io_uring
/// set-up failed, and with what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fallback {
    /// `"io_uring_setup"`, or `"probe"` when the ring came up without an
    /// opcode tally needs.
    pub step: &'static str,
    /// The errno of that step (`EPERM`, `ENOSYS`, `ENOMEM`, `EINVAL`, ...;
    /// `EOPNOTSUPP` for a missing opcode).
    pub errno: i32,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = std::io::Error::from_raw_os_error(self.errno);
        write!(f, "{} failed: {e}", self.step)
    }
}
