//! `mio`, answered by tally: everything is `tally_compat_mio`'s, which has
//! mio 1.x's API whatever features are on (`os-poll`, `os-ext` and `net`
//! are accepted so that dependents that name them build).
#![no_std]
pub use tally_compat_mio::*;
