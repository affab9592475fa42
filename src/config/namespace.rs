//! Which namespace an issuer's Secrets and ConfigMaps are read from (product.md §6).

use crate::api::IssuerKind;

/// Namespace for commandSecretName, caSecretName and caBundleConfigMapName: the issuer's own
/// namespace only for an Issuer with cluster-level secret access, else the controller's.
pub fn secret_namespace(
    kind: IssuerKind,
    issuer_namespace: Option<&str>,
    cluster_resource_namespace: &str,
    secret_access_at_cluster_level: bool,
) -> String {
    match (kind, issuer_namespace) {
        (IssuerKind::Issuer, Some(ns)) if secret_access_at_cluster_level => ns.to_string(),
        _ => cluster_resource_namespace.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_product_section_6() {
        assert_eq!(
            secret_namespace(IssuerKind::Issuer, Some("team"), "ctl", false),
            "ctl"
        );
        assert_eq!(
            secret_namespace(IssuerKind::Issuer, Some("team"), "ctl", true),
            "team"
        );
        assert_eq!(
            secret_namespace(IssuerKind::ClusterIssuer, None, "ctl", false),
            "ctl"
        );
        assert_eq!(
            secret_namespace(IssuerKind::ClusterIssuer, None, "ctl", true),
            "ctl"
        );
    }
}
