//! Kubernetes types: our Issuer/ClusterIssuer CRDs and the cert-manager fields we read and write.

mod certificate_request;
mod issuer;

pub use certificate_request::{
    CertificateRequest, CertificateRequestCondition, CertificateRequestSpec,
    CertificateRequestStatus, IssuerRef,
};
pub use issuer::{
    ClusterIssuer, ClusterIssuerSpec, ConditionStatus, HealthCheck, Issuer, IssuerCondition,
    IssuerKind, IssuerSpec, IssuerStatus,
};

mod crdgen;
pub use crdgen::{crd_files, CrdGenError};
