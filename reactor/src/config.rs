//! Settings fixed when a reactor is built, and the tokens the reactor
//! reserves for itself: a leaf that every layer may read.

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
}
