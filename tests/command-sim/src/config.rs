//! Simulator configuration file (JSON): which users, roles, metadata fields, CAs, templates and
//! enrollment patterns the simulated Command instance knows about.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

/// Permission needed for `GET /MetadataFields`.
pub const PERM_METADATA_READ: &str = "/metadata/types/read/";
/// Permission needed for `GET /EnrollmentPatterns`.
pub const PERM_PATTERN_READ: &str = "/enrollment_pattern/read/";
/// Permission needed for `POST /Enrollment/CSR`.
pub const PERM_ENROLL_CSR: &str = "/certificates/enrollment/csr/";

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File that failed.
        path: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON for the schema.
    #[error("cannot parse config {path}: {source}")]
    Parse {
        /// File that failed.
        path: String,
        /// Underlying JSON error.
        source: serde_json::Error,
    },
    /// The file parsed but refers to things that do not exist or repeats names.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Which Command release the simulator behaves like (command-api.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum EmulatedVersion {
    /// Command 25.1: enrollment patterns exist, CA optional with a pattern.
    #[default]
    #[serde(rename = "25.1")]
    V25_1,
    /// Command 24.4: no `/EnrollmentPatterns`, template and CA required.
    #[serde(rename = "24.4")]
    V24_4,
}

impl EmulatedVersion {
    /// Whether enrollment patterns exist in this version.
    pub fn has_patterns(self) -> bool {
        self == EmulatedVersion::V25_1
    }

    /// Product version header value used when the config does not set one.
    pub fn default_product_version(self) -> &'static str {
        match self {
            EmulatedVersion::V25_1 => "25.1.1.0",
            EmulatedVersion::V24_4 => "24.4.0.0",
        }
    }
}

/// How the simulated CA answers an enrollment on a template or pattern (command-api.md §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Issue the certificate at once (`ISSUED`).
    #[default]
    Issue,
    /// Hold the request for approval (`PENDING`, no certificates).
    Pending,
    /// The CA delivers later (`EXTERNAL VALIDATION`, no certificates).
    ExternalValidation,
    /// The request is denied (`DENIED`, no certificates).
    Deny,
    /// The CA rejects the request: `400` with an error body.
    #[serde(rename = "fail-400")]
    Fail400,
    /// Issued, but the answer omits `Certificates`, `KeyfactorRequestId`, `RequestDisposition`
    /// and `DispositionMessage` (a broken proxy or an incompatible version).
    MissingFields,
    /// Issued, but `Certificates: []` (the certificate can still be downloaded).
    EmptyCertificates,
    /// Issued, but the chain lacks the issuing CA: `[leaf, root]`.
    BrokenChain,
    /// Issued, chain out of order: `[root, leaf, issuing CA]`.
    ReorderedChain,
}

impl Mode {
    /// Whether the CA signs the certificate (the record is `ISSUED` and downloadable), whatever
    /// shape the answer then has.
    pub fn issues(self) -> bool {
        matches!(
            self,
            Mode::Issue
                | Mode::MissingFields
                | Mode::EmptyCertificates
                | Mode::BrokenChain
                | Mode::ReorderedChain
        )
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base path of the API (`KeyfactorAPI`), matched case-insensitively.
    #[serde(default = "default_base_path")]
    pub base_path: String,
    /// Value of `x-keyfactor-product-version`; defaults per emulated version.
    #[serde(default)]
    pub product_version: Option<String>,
    /// Emulated Command release, `"25.1"` (default) or `"24.4"`.
    #[serde(default)]
    pub version: EmulatedVersion,
    /// Extra DNS names / IPs for the HTTPS server certificate.
    #[serde(default)]
    pub tls_hostnames: Vec<String>,
    /// Basic-auth users.
    #[serde(default)]
    pub users: Vec<User>,
    /// Security roles.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Metadata field definitions.
    #[serde(default)]
    pub metadata_fields: Vec<MetadataField>,
    /// Certificate authorities.
    #[serde(default)]
    pub cas: Vec<Ca>,
    /// Certificate templates.
    #[serde(default)]
    pub templates: Vec<Template>,
    /// Enrollment patterns (25.1 only).
    #[serde(default)]
    pub enrollment_patterns: Vec<EnrollmentPattern>,
    /// Clients of the built-in identity provider (`POST /_idp/token`).
    #[serde(default)]
    pub oauth_clients: Vec<OAuthClient>,
    /// Further token issuers Command trusts (the built-in IdP is always trusted).
    #[serde(default)]
    pub identity_providers: Vec<IdentityProvider>,
    /// The Google metadata server simulator (`--gce-metadata-listen`).
    #[serde(default)]
    pub gce: GceConfig,
    /// The Entra ID token endpoint simulator (`/_entra/…`); absent = every tenant unknown.
    #[serde(default)]
    pub entra: Option<EntraConfig>,
}

fn default_base_path() -> String {
    "KeyfactorAPI".to_string()
}

fn default_true() -> bool {
    true
}

fn default_data_type() -> i64 {
    1
}

fn default_lifetime() -> u64 {
    3600
}

/// How an OAuth client must authenticate at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthStyle {
    /// `Authorization: Basic` only.
    Basic,
    /// `client_id` + `client_secret` in the form body only.
    Body,
    /// Either.
    #[default]
    Any,
}

/// A client of the built-in identity provider (RFC 6749 §4.4 client credentials).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClient {
    /// Client id; also the token's `sub`, `client_id` and `azp`.
    pub client_id: String,
    /// Client secret, compared exactly.
    pub client_secret: String,
    /// Which client authentication the token endpoint accepts.
    #[serde(default)]
    pub auth_style: AuthStyle,
    /// Command role of the client's tokens; none = authenticated but in no role (→ 403).
    #[serde(default)]
    pub role: Option<String>,
    /// `expires_in` / `exp - iat` of issued tokens.
    #[serde(default = "default_lifetime")]
    pub token_lifetime_secs: u64,
    /// Scopes the client may request; empty = any.
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    /// `aud` when the request has no `audience` (default `command`).
    #[serde(default)]
    pub audience: Option<String>,
}

/// A token issuer Command trusts, with the role of each identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProvider {
    /// Exact `iss` value.
    pub issuer: String,
    /// Identity (`sub`, `oid`, `client_id`, `azp`, `appid` or `email` claim) → role name;
    /// `null` = known but in no role.
    #[serde(default)]
    pub subjects: std::collections::BTreeMap<String, Option<String>>,
}

fn default_gce_subject() -> String {
    "112233445566778899".into()
}

fn default_gce_email() -> String {
    "command-issuer@project.iam.gserviceaccount.com".into()
}

fn default_gce_project() -> String {
    "project".into()
}

/// The simulated GKE metadata server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GceConfig {
    /// `false`: the Kubernetes ServiceAccount is not bound to a Google service account, so the
    /// identity endpoint answers 404.
    #[serde(default = "default_true")]
    pub bound: bool,
    /// `sub` (and `azp`) of the ID tokens.
    #[serde(default = "default_gce_subject")]
    pub subject: String,
    /// `email` of the ID tokens.
    #[serde(default = "default_gce_email")]
    pub email: String,
    /// `project/project-id`.
    #[serde(default = "default_gce_project")]
    pub project_id: String,
    /// Lifetime of the ID tokens.
    #[serde(default = "default_lifetime")]
    pub token_lifetime_secs: u64,
}

impl Default for GceConfig {
    fn default() -> Self {
        GceConfig {
            bound: true,
            subject: default_gce_subject(),
            email: default_gce_email(),
            project_id: default_gce_project(),
            token_lifetime_secs: default_lifetime(),
        }
    }
}

fn default_entra_subject() -> String {
    "99999999-8888-7777-6666-555555555555".into()
}

/// The simulated Entra ID tenant with one workload identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraConfig {
    /// Tenant id in the token URL.
    pub tenant_id: String,
    /// Client (application) id of the workload identity.
    pub client_id: String,
    /// The exact `client_assertion` accepted; empty = any non-empty assertion.
    #[serde(default)]
    pub federated_token: String,
    /// `sub` and `oid` of the issued tokens.
    #[serde(default = "default_entra_subject")]
    pub subject: String,
    /// Known resources (`scope` without `/.default`), compared case-insensitively; absent =
    /// `["api://<client_id>"]`, empty = any.
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    /// `roles` claim of the issued tokens (app roles), omitted when empty.
    #[serde(default)]
    pub roles: Vec<String>,
    /// `false`: the identity is not assigned to an app role (`AADSTS501051`).
    #[serde(default = "default_true")]
    pub role_assigned: bool,
    /// `expires_in` of the issued tokens.
    #[serde(default = "default_lifetime")]
    pub token_lifetime_secs: u64,
}

impl EntraConfig {
    /// `https://login.microsoftonline.com/{tenant}/v2.0`.
    pub fn issuer(&self) -> String {
        format!("https://login.microsoftonline.com/{}/v2.0", self.tenant_id)
    }

    /// Whether `resource` is a known app (see [`EntraConfig::resources`]).
    pub fn knows_resource(&self, resource: &str) -> bool {
        match &self.resources {
            None => resource.eq_ignore_ascii_case(&format!("api://{}", self.client_id)),
            Some(list) => list.is_empty() || list.iter().any(|r| r.eq_ignore_ascii_case(resource)),
        }
    }
}

/// A Basic-auth identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// `user` or `DOMAIN\user`, compared case-insensitively.
    pub username: String,
    /// Password, compared exactly.
    pub password: String,
    /// Name of the user's role; none means "authenticated but in no role".
    #[serde(default)]
    pub role: Option<String>,
}

/// A Command security role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Role id (what `OwnerRoleId` refers to).
    pub id: i64,
    /// Role name (what `OwnerRoleName` and `allowed_roles` refer to).
    pub name: String,
    /// Permission paths such as `/certificates/enrollment/csr/`; a path grants everything below it.
    #[serde(default)]
    pub permissions: Vec<String>,
}

impl Role {
    /// Whether this role holds `permission` (exactly or through a parent path).
    pub fn grants(&self, permission: &str) -> bool {
        let wanted = normalise_permission(permission);
        self.permissions
            .iter()
            .map(|p| normalise_permission(p))
            .any(|p| wanted.starts_with(&p))
    }
}

fn normalise_permission(p: &str) -> String {
    let mut s = p.trim().to_ascii_lowercase();
    if !s.starts_with('/') {
        s.insert(0, '/');
    }
    if !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// A metadata field definition (`GET /MetadataFields`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataField {
    /// Field id.
    pub id: i64,
    /// Unique field name.
    pub name: String,
    /// Command data type enum; 1 = String, 2 = Integer, 3 = Date, 4 = Boolean.
    #[serde(default = "default_data_type")]
    pub data_type: i64,
    /// Free text description.
    #[serde(default)]
    pub description: String,
    /// Sort key of the default listing.
    pub display_order: i64,
}

/// A certificate authority.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ca {
    /// Logical name, e.g. `Sub-CA`.
    pub logical_name: String,
    /// Host name, e.g. `ca01.example.com`.
    pub host: String,
    /// Standalone CA: a pattern enrollment must then name the CA explicitly.
    #[serde(default)]
    pub standalone: bool,
}

impl Ca {
    /// The `host\logical` form used in requests and records.
    pub fn full_name(&self) -> String {
        format!("{}\\{}", self.host, self.logical_name)
    }
}

/// A certificate template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Template id (shown in pattern objects).
    pub id: i64,
    /// Short name, what the `Template` request field carries.
    pub short_name: String,
    /// CAs the template is published on (`host\logical` or `logical`).
    #[serde(default)]
    pub cas: Vec<String>,
    /// Role names allowed to enroll; empty means every role.
    #[serde(default)]
    pub allowed_roles: Vec<String>,
    /// How enrollments on this template are answered.
    #[serde(default)]
    pub mode: Mode,
}

/// An enrollment pattern (Command 25.1+).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentPattern {
    /// Pattern id (what `EnrollmentPatternId` carries).
    pub id: i64,
    /// Pattern name (what `QueryString=Name -eq "…"` matches).
    pub name: String,
    /// Short name of the pattern's template.
    pub template: String,
    /// Whether CSR enrollment (bit 2) is allowed.
    #[serde(default = "default_true")]
    pub csr_enabled: bool,
    /// CAs the pattern may use; empty means the template's CAs.
    #[serde(default)]
    pub cas: Vec<String>,
    /// Role names allowed to enroll; empty means every role.
    #[serde(default)]
    pub allowed_roles: Vec<String>,
    /// Overrides the template's mode when set.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Free text description.
    #[serde(default)]
    pub description: String,
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config: Config = serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The base path without surrounding slashes.
    pub fn base(&self) -> &str {
        self.base_path.trim_matches('/')
    }

    /// Product version string sent in `x-keyfactor-product-version`.
    pub fn product_version(&self) -> String {
        self.product_version
            .clone()
            .unwrap_or_else(|| self.version.default_product_version().to_string())
    }

    /// Finds a role by name (case-insensitive).
    pub fn role_by_name(&self, name: &str) -> Option<&Role> {
        self.roles
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
    }

    /// Resolves a CA reference (`host\logical` or `logical`) to an index into `cas`.
    pub fn resolve_ca(&self, reference: &str) -> Option<usize> {
        let reference = reference.trim();
        match reference.split_once('\\') {
            Some((host, logical)) => self.cas.iter().position(|ca| {
                ca.host.eq_ignore_ascii_case(host) && ca.logical_name.eq_ignore_ascii_case(logical)
            }),
            None => self
                .cas
                .iter()
                .position(|ca| ca.logical_name.eq_ignore_ascii_case(reference)),
        }
    }

    /// Finds an OAuth client by id (exact).
    pub fn oauth_client(&self, client_id: &str) -> Option<&OAuthClient> {
        self.oauth_clients.iter().find(|c| c.client_id == client_id)
    }

    /// Finds a template by short name (case-insensitive).
    pub fn template_by_name(&self, name: &str) -> Option<&Template> {
        self.templates
            .iter()
            .find(|t| t.short_name.eq_ignore_ascii_case(name.trim()))
    }

    /// Finds an enrollment pattern by id.
    pub fn pattern_by_id(&self, id: i64) -> Option<&EnrollmentPattern> {
        self.enrollment_patterns.iter().find(|p| p.id == id)
    }

    /// Indices of the CAs a template is published on.
    pub fn template_cas(&self, template: &Template) -> Vec<usize> {
        dedup(template.cas.iter().filter_map(|c| self.resolve_ca(c)))
    }

    /// Indices of the CAs a pattern may use (its own list, else its template's).
    pub fn pattern_cas(&self, pattern: &EnrollmentPattern) -> Vec<usize> {
        if pattern.cas.is_empty() {
            self.template_by_name(&pattern.template)
                .map(|t| self.template_cas(t))
                .unwrap_or_default()
        } else {
            dedup(pattern.cas.iter().filter_map(|c| self.resolve_ca(c)))
        }
    }

    /// Checks cross references and uniqueness.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.base().is_empty() {
            return bad("base_path must not be empty".into());
        }
        unique(self.roles.iter().map(|r| r.id.to_string()), "role id")?;
        unique(self.roles.iter().map(|r| r.name.clone()), "role name")?;
        unique(self.users.iter().map(|u| u.username.clone()), "username")?;
        unique(
            self.metadata_fields.iter().map(|f| f.name.clone()),
            "metadata field name",
        )?;
        unique(
            self.metadata_fields.iter().map(|f| f.id.to_string()),
            "metadata field id",
        )?;
        unique(self.cas.iter().map(Ca::full_name), "CA")?;
        unique(
            self.templates.iter().map(|t| t.short_name.clone()),
            "template name",
        )?;
        unique(
            self.templates.iter().map(|t| t.id.to_string()),
            "template id",
        )?;
        unique(
            self.enrollment_patterns.iter().map(|p| p.id.to_string()),
            "pattern id",
        )?;
        for user in &self.users {
            if let Some(role) = &user.role {
                if self.role_by_name(role).is_none() {
                    return bad(format!("user {} has unknown role {role}", user.username));
                }
            }
        }
        unique(
            self.oauth_clients.iter().map(|c| c.client_id.clone()),
            "oauth client id",
        )?;
        unique(
            self.identity_providers.iter().map(|p| p.issuer.clone()),
            "identity provider issuer",
        )?;
        for c in &self.oauth_clients {
            if c.client_id.is_empty() {
                return bad("oauth client with empty client_id".into());
            }
            if let Some(role) = &c.role {
                if self.role_by_name(role).is_none() {
                    return bad(format!(
                        "oauth client {} has unknown role {role}",
                        c.client_id
                    ));
                }
            }
        }
        for p in &self.identity_providers {
            for (subject, role) in &p.subjects {
                if let Some(role) = role {
                    if self.role_by_name(role).is_none() {
                        return bad(format!(
                            "identity provider {} maps {subject} to unknown role {role}",
                            p.issuer
                        ));
                    }
                }
            }
        }
        for t in &self.templates {
            for ca in &t.cas {
                if self.resolve_ca(ca).is_none() {
                    return bad(format!("template {} names unknown CA {ca}", t.short_name));
                }
            }
            for role in &t.allowed_roles {
                if self.role_by_name(role).is_none() {
                    return bad(format!(
                        "template {} allows unknown role {role}",
                        t.short_name
                    ));
                }
            }
        }
        for p in &self.enrollment_patterns {
            if self.template_by_name(&p.template).is_none() {
                return bad(format!(
                    "pattern {} names unknown template {}",
                    p.id, p.template
                ));
            }
            for ca in &p.cas {
                if self.resolve_ca(ca).is_none() {
                    return bad(format!("pattern {} names unknown CA {ca}", p.id));
                }
            }
            for role in &p.allowed_roles {
                if self.role_by_name(role).is_none() {
                    return bad(format!("pattern {} allows unknown role {role}", p.id));
                }
            }
        }
        Ok(())
    }
}

fn dedup(items: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut out = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn unique(items: impl Iterator<Item = String>, what: &str) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for item in items {
        if !seen.insert(item.to_ascii_lowercase()) {
            return Err(ConfigError::Invalid(format!("duplicate {what}: {item}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.json");
        let config = Config::load(&path).expect("default config loads");
        assert_eq!(config.base(), "KeyfactorAPI");
        assert_eq!(config.product_version(), "25.1.1.0");
        assert!(config.metadata_fields.len() > 50);
    }

    #[test]
    fn permission_prefixes_grant_children() {
        let role = Role {
            id: 1,
            name: "r".into(),
            permissions: vec!["/certificates".into()],
        };
        assert!(role.grants(PERM_ENROLL_CSR));
        assert!(!role.grants(PERM_METADATA_READ));
    }

    #[test]
    fn ca_references_resolve() {
        let config: Config = serde_json::from_str(
            r#"{"cas":[{"logical_name":"Sub-CA","host":"ca01.example.com"}]}"#,
        )
        .expect("parses");
        assert_eq!(config.resolve_ca("ca01.example.com\\sub-ca"), Some(0));
        assert_eq!(config.resolve_ca("Sub-CA"), Some(0));
        assert_eq!(config.resolve_ca("other\\Sub-CA"), None);
        assert_eq!(config.resolve_ca("ca01.example.com\\"), None);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<Config>(r#"{"bogus":1}"#);
        assert!(err.is_err());
        let err = serde_json::from_str::<Config>(
            r#"{"oauth_clients":[{"client_id":"a","client_secret":"b","bogus":1}]}"#,
        );
        assert!(err.is_err());
        let err = serde_json::from_str::<Config>(r#"{"gce":{"bogus":1}}"#);
        assert!(err.is_err());
    }

    #[test]
    fn oauth_defaults_and_role_check() {
        let c: Config = serde_json::from_str(
            r#"{"oauth_clients":[{"client_id":"a","client_secret":"b","role":"Nope"}]}"#,
        )
        .expect("parses");
        assert_eq!(c.oauth_clients[0].auth_style, AuthStyle::Any);
        assert_eq!(c.oauth_clients[0].token_lifetime_secs, 3600);
        assert!(c.gce.bound);
        assert!(c.validate().is_err());
        let e: EntraConfig =
            serde_json::from_str(r#"{"tenant_id":"t","client_id":"c"}"#).expect("entra");
        assert!(e.knows_resource("API://c"));
        assert!(!e.knows_resource("api://other"));
        assert_eq!(e.issuer(), "https://login.microsoftonline.com/t/v2.0");
    }
}
