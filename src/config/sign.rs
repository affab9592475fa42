//! Enrollment settings after annotation overrides (product.md §9, §10.1; design.md §3.4).

use std::collections::BTreeMap;

use super::ConfigError;
use crate::api::IssuerSpec;

/// Prefix of the seven spec-override annotations.
pub const ANNOTATION_PREFIX: &str = "command-issuer.keyfactor.com/";
/// The predefined metadata fields the controller writes; custom metadata may not name them.
pub const RESERVED_METADATA: [&str; 7] = [
    "Controller-Namespace",
    "Controller-Kind",
    "Controller-Resource-Group-Name",
    "Issuer-Name",
    "Issuer-Namespace",
    "Controller-Reconcile-Id",
    "Certificate-Signing-Request-Namespace",
];

/// Prefix of custom metadata annotations.
pub const METADATA_ANNOTATION_PREFIX: &str = "metadata.command-issuer.keyfactor.com/";

/// What one enrollment asks Command for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignConfig {
    /// Template short name.
    pub template: Option<String>,
    /// CA logical name.
    pub ca_logical_name: Option<String>,
    /// CA host name.
    pub ca_hostname: Option<String>,
    /// Enrollment pattern id (non-zero).
    pub pattern_id: Option<i32>,
    /// Enrollment pattern name, looked up only when no id is set.
    pub pattern_name: Option<String>,
    /// Owner role id (non-zero).
    pub owner_role_id: Option<i32>,
    /// Owner role name, sent only without an id.
    pub owner_role_name: Option<String>,
    /// Custom metadata from annotations.
    pub custom_metadata: BTreeMap<String, String>,
}

impl SignConfig {
    /// `CertificateAuthority` as sent: `host\logical`, `logical`, or empty.
    pub fn certificate_authority(&self) -> String {
        match (&self.ca_hostname, &self.ca_logical_name) {
            (Some(h), l) => format!("{h}\\{}", l.as_deref().unwrap_or("")),
            (None, Some(l)) => l.clone(),
            (None, None) => String::new(),
        }
    }

    /// True when an enrollment pattern (id or name) is configured.
    pub fn has_pattern(&self) -> bool {
        self.pattern_id.is_some() || self.pattern_name.is_some()
    }
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|v| !v.is_empty()).map(str::to_string)
}

fn non_zero(v: Option<i32>) -> Option<i32> {
    v.filter(|v| *v != 0)
}

fn parse_int(field: &'static str, value: &str) -> Result<Option<i32>, ConfigError> {
    if value.is_empty() {
        return Ok(None);
    }
    let reason = match value.parse::<i64>() {
        Ok(v) => match i32::try_from(v) {
            Ok(v) => return Ok(non_zero(Some(v))),
            Err(_) => "value out of range",
        },
        Err(_)
            if value
                .trim_start_matches(['-', '+'])
                .chars()
                .all(|c| c.is_ascii_digit())
                && !value.trim_start_matches(['-', '+']).is_empty() =>
        {
            "value out of range"
        }
        Err(_) => "invalid syntax",
    };
    Err(ConfigError::AnnotationInteger {
        field,
        value: value.to_string(),
        reason,
    })
}

/// Applies the override annotations to the spec (a present key wins even when empty), collects
/// custom metadata, then validates — after overrides, so annotations can complete a sparse spec.
pub fn sign_config(
    spec: &IssuerSpec,
    annotations: &BTreeMap<String, String>,
) -> Result<SignConfig, ConfigError> {
    let ann = |k: &str| {
        annotations
            .get(&format!("{ANNOTATION_PREFIX}{k}"))
            .map(String::as_str)
    };
    let pick = |k: &str, spec_value: Option<&str>| match ann(k) {
        Some(v) => non_empty(Some(v)),
        None => non_empty(spec_value),
    };
    let mut c = SignConfig {
        template: pick("certificateTemplate", spec.certificate_template.as_deref()),
        ca_logical_name: pick(
            "certificateAuthorityLogicalName",
            spec.certificate_authority_logical_name.as_deref(),
        ),
        ca_hostname: pick(
            "certificateAuthorityHostname",
            spec.certificate_authority_hostname.as_deref(),
        ),
        pattern_id: match ann("enrollmentPatternId") {
            Some(v) => parse_int("enrollmentPatternId", v)?,
            None => non_zero(spec.enrollment_pattern_id),
        },
        pattern_name: pick(
            "enrollmentPatternName",
            spec.enrollment_pattern_name.as_deref(),
        ),
        owner_role_id: match ann("ownerRoleId") {
            Some(v) => parse_int("ownerRoleId", v)?,
            None => non_zero(spec.owner_role_id),
        },
        owner_role_name: pick("ownerRoleName", spec.owner_role_name.as_deref()),
        custom_metadata: annotations
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(METADATA_ANNOTATION_PREFIX)
                    .filter(|name| !name.is_empty())
                    .map(|name| (name.to_string(), v.clone()))
            })
            .collect(),
    };
    if let Some(name) = c
        .custom_metadata
        .keys()
        .find(|k| RESERVED_METADATA.iter().any(|r| r.eq_ignore_ascii_case(k)))
    {
        // The predefined fields are the controller's record of who enrolled (and its key for
        // finding an interrupted enrollment again): a request may not write them.
        return Err(ConfigError::ReservedMetadata(format!(
            "{METADATA_ANNOTATION_PREFIX}{name}"
        )));
    }
    if c.pattern_id.is_some() {
        c.pattern_name = None;
    }
    if c.owner_role_id.is_some() {
        c.owner_role_name = None;
    }
    if c.template.is_none() && !c.has_pattern() {
        return Err(ConfigError::Signer(
            "either certificateTemplate, enrollmentPatternName, or enrollmentPatternId must be specified",
        ));
    }
    if c.ca_logical_name.is_none() && !c.has_pattern() {
        return Err(ConfigError::Signer(
            "certificateAuthorityLogicalName is required if enrollmentPatternName or enrollmentPatternId are not provided",
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn spec() -> IssuerSpec {
        IssuerSpec {
            certificate_template: Some("Web".into()),
            certificate_authority_logical_name: Some("Sub-CA".into()),
            ..Default::default()
        }
    }

    #[test]
    fn annotation_beats_spec_even_when_empty() {
        let c = sign_config(
            &spec(),
            &ann(&[("command-issuer.keyfactor.com/certificateTemplate", "Other")]),
        )
        .unwrap();
        assert_eq!(c.template.as_deref(), Some("Other"));
        let err = sign_config(
            &spec(),
            &ann(&[("command-issuer.keyfactor.com/certificateTemplate", "")]),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "invalid signer config: either certificateTemplate, enrollmentPatternName, or enrollmentPatternId must be specified");
    }

    #[test]
    fn bad_integer_message_matches_go() {
        let err = sign_config(
            &spec(),
            &ann(&[(
                "command-issuer.keyfactor.com/enrollmentPatternId",
                "foobar!",
            )]),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "invalid signer config: failed to parse enrollmentPatternId from annotations: strconv.ParseInt: parsing \"foobar!\": invalid syntax");
        let err = sign_config(
            &spec(),
            &ann(&[("command-issuer.keyfactor.com/ownerRoleId", "99999999999")]),
        )
        .unwrap_err();
        assert!(err.to_string().ends_with("value out of range"), "{err}");
    }

    #[test]
    fn annotations_complete_a_sparse_spec() {
        let c = sign_config(
            &IssuerSpec::default(),
            &ann(&[("command-issuer.keyfactor.com/enrollmentPatternId", "1234")]),
        )
        .unwrap();
        assert_eq!(c.pattern_id, Some(1234));
        assert_eq!(c.certificate_authority(), "");
    }

    #[test]
    fn ids_win_over_names_and_ca_forms() {
        let mut s = spec();
        s.enrollment_pattern_id = Some(5);
        s.enrollment_pattern_name = Some("P".into());
        s.owner_role_id = Some(2);
        s.owner_role_name = Some("R".into());
        s.certificate_authority_hostname = Some("ca01".into());
        let c = sign_config(
            &s,
            &ann(&[("metadata.command-issuer.keyfactor.com/Team", "t")]),
        )
        .unwrap();
        assert_eq!((c.pattern_id, c.pattern_name.clone()), (Some(5), None));
        assert_eq!(
            (c.owner_role_id, c.owner_role_name.clone()),
            (Some(2), None)
        );
        assert_eq!(c.certificate_authority(), "ca01\\Sub-CA");
        assert_eq!(c.custom_metadata.get("Team").map(String::as_str), Some("t"));
        s.enrollment_pattern_id = Some(0);
        let c = sign_config(&s, &BTreeMap::new()).unwrap();
        assert_eq!(c.pattern_name.as_deref(), Some("P"));
    }

    #[test]
    fn hostile_integer_annotations_are_out_of_range_not_wrapped() {
        for v in [
            "9223372036854775808",
            "18446744073709551615",
            "-9223372036854775809",
            "2147483648",
            "-2147483649",
            &"9".repeat(400),
        ] {
            let err = sign_config(
                &spec(),
                &ann(&[("command-issuer.keyfactor.com/enrollmentPatternId", v)]),
            )
            .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid signer config: failed to parse enrollmentPatternId from annotations: strconv.ParseInt: parsing {v:?}: value out of range")
            );
        }
        for v in ["1e300", "1.5", "0x10"] {
            let err = sign_config(
                &spec(),
                &ann(&[("command-issuer.keyfactor.com/ownerRoleId", v)]),
            )
            .unwrap_err();
            assert!(err.to_string().ends_with("invalid syntax"), "{v}: {err}");
        }
    }

    #[test]
    fn custom_metadata_cannot_set_the_predefined_fields() {
        let spec = IssuerSpec {
            certificate_template: Some("t".into()),
            ..Default::default()
        };
        for name in ["Controller-Reconcile-Id", "issuer-name"] {
            let key = format!("{METADATA_ANNOTATION_PREFIX}{name}");
            let e = sign_config(&spec, &ann(&[(key.as_str(), "x")])).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid signer config: metadata annotation \"{key}\" names a field the controller sets itself; remove the annotation")
            );
        }
    }
}
