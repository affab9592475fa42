//! `GET /EnrollmentPatterns` (command-api.md §5.3, Command 25.1+): enrollment patterns, usually
//! looked up with `QueryString=Name -eq "…"`.

use serde::Serialize;
use serde_json::{json, Value};

use super::query::{self, FieldValue, Listable};
use super::{ok, Answer};
use crate::config::{Config, EnrollmentPattern};
use crate::state::AppState;

/// `AllowedEnrollmentTypes` bit for PFX enrollment.
pub const ENROLL_PFX: i64 = 1;
/// `AllowedEnrollmentTypes` bit for CSR enrollment.
pub const ENROLL_CSR: i64 = 2;

impl Listable for &EnrollmentPattern {
    fn field(&self, field: &str) -> Option<FieldValue> {
        match field {
            "Id" => Some(FieldValue::Int(self.id)),
            "Name" => Some(FieldValue::Str(self.name.clone())),
            "Description" => Some(FieldValue::Str(self.description.clone())),
            _ => None,
        }
    }
}

/// `AllowedEnrollmentTypes` of a pattern: PFX always, CSR when enabled.
pub fn allowed_types(p: &EnrollmentPattern) -> i64 {
    ENROLL_PFX | if p.csr_enabled { ENROLL_CSR } else { 0 }
}

/// The JSON object Command returns for one pattern.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PatternJson<'a> {
    id: i64,
    name: &'a str,
    description: &'a str,
    template: Value,
    template_default: bool,
    #[serde(rename = "UseADPermissions")]
    use_ad_permissions: bool,
    associated_roles: Vec<Value>,
    certificate_authorities: Vec<Value>,
    allowed_enrollment_types: i64,
    regexes: Vec<Value>,
    metadata_fields: Vec<Value>,
    #[serde(rename = "RestrictCAs")]
    restrict_cas: bool,
    policies: Value,
    defaults: Vec<Value>,
    enrollment_fields: Vec<Value>,
}

/// Builds the pattern object from configuration.
pub fn pattern_json<'a>(config: &Config, p: &'a EnrollmentPattern) -> PatternJson<'a> {
    let template = match config.template_by_name(&p.template) {
        Some(t) => json!({
            "Id": t.id,
            "CommonName": t.short_name,
            "TemplateName": t.short_name,
            "DisplayName": t.short_name,
        }),
        None => Value::Null,
    };
    // The first pattern of a template is its default pattern.
    let template_default = config
        .enrollment_patterns
        .iter()
        .find(|o| o.template.eq_ignore_ascii_case(&p.template))
        .map(|o| o.id == p.id)
        .unwrap_or(false);
    let certificate_authorities = config
        .pattern_cas(p)
        .into_iter()
        .filter_map(|i| config.cas.get(i).map(|ca| (i, ca)))
        .map(|(i, ca)| {
            json!({
                "Id": i + 1,
                "LogicalName": ca.logical_name,
                "HostName": ca.host,
                "Standalone": ca.standalone,
            })
        })
        .collect();
    let associated_roles = config
        .roles
        .iter()
        .filter(|r| {
            p.allowed_roles.is_empty()
                || p.allowed_roles
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&r.name))
        })
        .map(|r| json!({"Id": r.id, "Name": r.name}))
        .collect();
    PatternJson {
        id: p.id,
        name: &p.name,
        description: &p.description,
        template,
        template_default,
        use_ad_permissions: false,
        associated_roles,
        certificate_authorities,
        allowed_enrollment_types: allowed_types(p),
        regexes: Vec::new(),
        metadata_fields: Vec::new(),
        restrict_cas: !p.cas.is_empty(),
        policies: json!({
            "AllowKeyReuse": false,
            "AllowWildcards": true,
            "RFCEnforcement": false,
        }),
        defaults: Vec::new(),
        enrollment_fields: Vec::new(),
    }
}

/// Lists patterns honouring `QueryString`, paging and sort parameters (default sort `Id`).
pub fn list(state: &AppState, raw_query: &str) -> Answer {
    let q = query::parse(
        raw_query,
        &["Name", "Id"],
        &["Id", "Name", "Description"],
        "Id",
    )?;
    let items: Vec<&EnrollmentPattern> = state.config.enrollment_patterns.iter().collect();
    let page: Vec<PatternJson<'_>> = query::apply(items, &q)
        .into_iter()
        .map(|p| pattern_json(&state.config, p))
        .collect();
    ok(&page)
}
