//! command-issuer: what a cert-manager external issuer for Keyfactor Command knows, with no actors.
//!
//! Every decision the controller takes lives here as a plain function so unit tests reach it;
//! the `command-issuer-actors` crate wires these into supervised actors with one I/O step each.

pub mod api;
pub mod auth;
pub mod backoff;
pub mod command;
pub mod conditions;
pub mod config;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod pki;
pub mod request;
pub mod telemetry;

/// API group of our Issuer and ClusterIssuer, also the `issuerRef.group` that selects us.
pub const GROUP: &str = "command-issuer.keyfactor.com";
/// The one served and stored version of our CRDs.
pub const VERSION: &str = "v1alpha1";
/// Field manager for every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "command-issuer";
