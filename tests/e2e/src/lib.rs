//! End-to-end harness for command-issuer: a real local control plane (etcd, kube-apiserver,
//! kube-controller-manager, cert-manager CRDs), the real cert-manager controller, the Command
//! simulator and the controller binary as processes, plus helpers to drive and check them.
//!
//! Tools come from `tests/harness/install.sh`; workspace binaries must be built first
//! (`cargo build --workspace --bins`).

#![warn(missing_docs)]

pub mod cert_manager;
pub mod control_plane;
pub mod controller;
pub mod fixtures;
pub mod http;
pub mod k8s;
pub mod paths;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod sim;
pub mod sweep;
pub mod verify;
pub mod wait;
pub mod write_faults;

pub use cert_manager::CertManager;
pub use control_plane::{run_kubectl, ControlPlane, StartTimings};
pub use controller::{Controller, DEFAULT_CLUSTER_RESOURCE_NAMESPACE};
pub use k8s::{
    approve, client_from_kubeconfig, condition, cr_ca, cr_certificate, create_certificate_request,
    deny, events_for, get_certificate_request, is_api_status, ready_condition, status_ca,
    status_certificate, Condition, ISSUER_GROUP,
};
pub use paths::{bin_path, tool_path};
pub use pki::{make_csr, make_csr_with_key};
pub use proxy::TcpProxy;
pub use sim::Sim;
pub use verify::verify_chain;
pub use wait::{try_wait_for, wait_for};

/// Kubernetes version install.sh builds, for messages and the README.
pub const KUBERNETES_VERSION: &str = "v1.34.4";
/// cert-manager controller version install.sh builds (last with cmd/controller in the main module).
pub const CERT_MANAGER_VERSION: &str = "v1.11.5";
