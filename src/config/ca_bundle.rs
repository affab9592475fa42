//! Picks the CA bundle out of a Secret's or ConfigMap's data (product.md §7.3).

use std::collections::BTreeMap;

use super::ConfigError;

/// The named key's value, or with no key the alphabetically last key (as the Go docs promise,
/// design.md §3.6).
pub fn select_ca_bundle(
    data: &BTreeMap<String, String>,
    key: Option<&str>,
) -> Result<String, ConfigError> {
    match key.filter(|k| !k.is_empty()) {
        Some(k) => data.get(k).cloned().ok_or_else(|| {
            ConfigError::CaBundleKey(format!("caBundleKey '{k}' not found in CA bundle data"))
        }),
        None => data
            .iter()
            .next_back()
            .map(|(_, v)| v.clone())
            .ok_or_else(|| ConfigError::CaBundleKey("CA bundle data is empty".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, String> {
        [("ca.crt", "A"), ("zzz.crt", "garbage"), ("b.pem", "B")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn named_key_wins_even_with_garbage_beside_it() {
        assert_eq!(select_ca_bundle(&data(), Some("ca.crt")).unwrap(), "A");
    }

    #[test]
    fn missing_key_message_matches_upstream() {
        assert_eq!(
            select_ca_bundle(&data(), Some("nope")).unwrap_err().to_string(),
            "failed to get CA bundle key from CA certificate data: caBundleKey 'nope' not found in CA bundle data"
        );
    }

    #[test]
    fn no_key_takes_alphabetically_last() {
        assert_eq!(select_ca_bundle(&data(), None).unwrap(), "garbage");
    }
}
