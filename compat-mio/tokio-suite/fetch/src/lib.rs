//! Unused: this package only fetches tokio's sources.
