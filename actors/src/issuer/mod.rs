//! Everything per issuer: the registry that owns each issuer's actors, the auth actor (token
//! cache) and the metadata-probe actor (Ready, SupportsMetadata), and the reads they share.

pub mod auth;
mod check;
pub use check::{ProbeDeps, CONCURRENT_CHECKS};
pub mod probe;
pub mod registry;
mod resolve;
mod spawn;
