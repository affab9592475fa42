//! The apiserver reads of one health check: the credential Secret and CA bundle an issuer
//! names, resolved into its connection; each read bounded in time.

use std::collections::BTreeMap;

use command_issuer::api::IssuerSpec;
use command_issuer::config::{
    credentials_from_secret, resolve_connection, select_ca_bundle, ConfigError, ConnectionConfig,
    Credentials,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

use crate::apiserver::{bounded, CALL_DEADLINE};

/// The Secrets and ConfigMaps an issuer reads: (kind, namespace, name).
pub type References = Vec<(&'static str, String, String)>;

/// Reads one named object; a failure becomes the issuer's error with the apiserver's reason.
async fn get_named<K>(
    api: &Api<K>,
    name: &str,
    error: impl FnOnce(String, String) -> ConfigError,
) -> Result<K, ConfigError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    bounded(
        "a read of an issuer's Secret or ConfigMap",
        CALL_DEADLINE,
        api.get(name),
    )
    .await
    .map_err(|e| error(name.to_string(), e.reason()))
}

/// Reads the credential Secret and CA bundle the spec names, then resolves the connection.
pub async fn resolve(
    client: Client,
    spec: &IssuerSpec,
    ns: &str,
) -> Result<ConnectionConfig, ConfigError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let credentials = match spec
        .command_secret_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        Some(name) => {
            let s = get_named(&secrets, name, |name, reason| {
                ConfigError::CredentialSecretMissing { name, reason }
            })
            .await?;
            credentials_from_secret(&s)?
        }
        None => Credentials::Ambient,
    };
    let key = spec.ca_bundle_key.as_deref();
    let ca = if let Some(name) = spec
        .ca_bundle_config_map_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        let cms: Api<ConfigMap> = Api::namespaced(client, ns);
        let cm = get_named(&cms, name, |name, reason| ConfigError::CaConfigMapMissing {
            name,
            reason,
        })
        .await?;
        Some(select_ca_bundle(&cm.data.unwrap_or_default(), key)?)
    } else if let Some(name) = spec.ca_secret_name.as_deref().filter(|s| !s.is_empty()) {
        let s = get_named(&secrets, name, |name, reason| {
            ConfigError::CaSecretMissing { name, reason }
        })
        .await?;
        let data: BTreeMap<String, String> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        Some(select_ca_bundle(&data, key)?)
    } else {
        None
    };
    resolve_connection(spec, credentials, ca)
}

/// The objects whose change should re-check the issuer at once.
pub fn references(spec: &IssuerSpec, ns: &str) -> References {
    let mut r = Vec::new();
    for (kind, name) in [
        ("Secret", &spec.command_secret_name),
        ("Secret", &spec.ca_secret_name),
        ("ConfigMap", &spec.ca_bundle_config_map_name),
    ] {
        if let Some(n) = name.as_deref().filter(|n| !n.is_empty()) {
            r.push((kind, ns.to_string(), n.to_string()));
        }
    }
    r
}
