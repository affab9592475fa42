//! Watchers, one per kind: they turn apiserver watch events into typed messages.

pub mod issuers;
pub mod references;
pub mod requests;
