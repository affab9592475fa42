//! The four Command calls the issuer makes, over one awc client per issuer connection.

use std::sync::Arc;
use std::time::Duration;

use awc::http::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use super::{
    CertificateSummary, CommandError, EnrollCsrRequest, EnrollCsrResponse, EnrollmentPattern,
    MetadataField, WorkflowRequest,
};

const MAX_BODY: usize = 8 * 1024 * 1024;
const METADATA_PAGE: usize = 100;
const METADATA_MAX_PAGES: usize = 1000;

/// Builds the HTTPS client: the CA bundle replaces the built-in roots when given
/// (product.md §7.3), HTTP/1.1, bounded connect and request time.
pub fn build_http_client(
    ca_bundle_pem: Option<&str>,
    timeout: Duration,
) -> Result<awc::Client, CommandError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_bundle_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(CommandError::Tls(
                    "failed to append custom CA cert to pool".into(),
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CommandError::Tls(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = awc::Connector::new()
        .rustls_0_23(Arc::new(config))
        .timeout(Duration::from_secs(10));
    Ok(awc::Client::builder()
        .connector(connector)
        .timeout(timeout)
        .disable_redirects()
        .finish())
}

/// One Command instance as seen by one issuer: base URL plus HTTP client.
#[derive(Clone)]
pub struct CommandClient {
    http: awc::Client,
    base_url: String,
}

impl CommandClient {
    /// Wraps an HTTP client for `https://host/apiPath`.
    pub fn new(http: awc::Client, base_url: String) -> Self {
        Self { http, base_url }
    }

    /// The URL prefix, for messages.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn request(
        &self,
        method: awc::http::Method,
        path: &str,
        auth: &SecretString,
    ) -> awc::ClientRequest {
        self.http
            .request(method, format!("{}{}", self.base_url, path))
            .insert_header(("Authorization", auth.expose_secret()))
            .insert_header(("x-keyfactor-requested-with", "APIClient"))
            .insert_header(("x-keyfactor-api-version", "1"))
            .insert_header(("Accept", "application/json"))
    }

    async fn finish<S>(
        method: &'static str,
        url: String,
        sent: Result<awc::ClientResponse<S>, awc::error::SendRequestError>,
    ) -> Result<(StatusCode, Vec<u8>), CommandError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    {
        let mut resp = sent.map_err(|e| CommandError::Transport {
            method,
            url: url.clone(),
            cause: e.to_string(),
        })?;
        let body = resp
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| CommandError::Transport {
                method,
                url,
                cause: format!("reading body: {e}"),
            })?;
        Ok((resp.status(), body.to_vec()))
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        auth: &SecretString,
        exactly_200: bool,
    ) -> Result<T, CommandError> {
        let url = format!("{}{}", self.base_url, path_and_query);
        let sent = self
            .request(awc::http::Method::GET, path_and_query, auth)
            .insert_header(("Content-Type", "application/json"))
            .send()
            .await;
        let (status, body) = Self::finish("Get", url, sent).await?;
        let ok = if exactly_200 {
            status == StatusCode::OK
        } else {
            status.as_u16() < 300
        };
        if !ok {
            return Err(status_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| CommandError::Decode(e.to_string()))
    }

    /// `GET /Status/Endpoints`: the authentication test and health check (200 + `[]string`).
    pub async fn status_endpoints(&self, auth: &SecretString) -> Result<Vec<String>, CommandError> {
        self.get_json("/Status/Endpoints", auth, true).await
    }

    /// `GET /MetadataFields`, every page (design.md §3.7: no 50-field blind spot).
    pub async fn metadata_fields(
        &self,
        auth: &SecretString,
    ) -> Result<Vec<MetadataField>, CommandError> {
        let mut all = Vec::new();
        for page in 1..=METADATA_MAX_PAGES {
            let batch: Vec<MetadataField> = self
                .get_json(
                    &format!("/MetadataFields?PageReturned={page}&ReturnLimit={METADATA_PAGE}"),
                    auth,
                    false,
                )
                .await?;
            let n = batch.len();
            all.extend(batch);
            if n < METADATA_PAGE {
                break;
            }
        }
        Ok(all)
    }

    /// `GET /EnrollmentPatterns?QueryString=Name -eq "<name>"`.
    pub async fn enrollment_patterns_named(
        &self,
        name: &str,
        auth: &SecretString,
    ) -> Result<Vec<EnrollmentPattern>, CommandError> {
        let q = crate::auth::urlencode(&format!("Name -eq \"{name}\""));
        self.get_json(&format!("/EnrollmentPatterns?QueryString={q}"), auth, false)
            .await
    }

    /// `GET /Workflow/Certificates/{id}`: the state of a request Command holds.
    pub async fn workflow_request(
        &self,
        id: i64,
        auth: &SecretString,
    ) -> Result<WorkflowRequest, CommandError> {
        self.get_json(&format!("/Workflow/Certificates/{id}"), auth, false)
            .await
    }

    /// `GET /Certificates?pq.queryString=CertRequestId -eq <id>`: the certificate a request
    /// produced, once it exists (the query Keyfactor's own Go client uses).
    pub async fn certificates_for_request(
        &self,
        id: i64,
        auth: &SecretString,
    ) -> Result<Vec<CertificateSummary>, CommandError> {
        let q = crate::auth::urlencode(&format!("CertRequestId -eq {id}"));
        self.get_json(&format!("/Certificates?pq.queryString={q}"), auth, false)
            .await
    }

    /// `GET /Certificates?pq.queryString=<field> -eq "<value>"`: certificates carrying a metadata
    /// value, to find what an interrupted enrollment produced (its `Controller-Reconcile-Id`).
    pub async fn certificates_with_metadata(
        &self,
        field: &str,
        value: &str,
        auth: &SecretString,
    ) -> Result<Vec<CertificateSummary>, CommandError> {
        let q = crate::auth::urlencode(&format!("{field} -eq \"{value}\""));
        self.get_json(&format!("/Certificates?pq.queryString={q}"), auth, false)
            .await
    }

    /// `POST /Certificates/Download` as PEM with the chain, leaf first: one PEM string per
    /// certificate.
    pub async fn download_pem(
        &self,
        cert_id: i64,
        auth: &SecretString,
    ) -> Result<Vec<String>, CommandError> {
        let url = format!("{}/Certificates/Download", self.base_url);
        let body = serde_json::json!({"CertID": cert_id, "IncludeChain": true, "ChainOrder": "EndEntityFirst"});
        let sent = self
            .request(awc::http::Method::POST, "/Certificates/Download", auth)
            .insert_header(("x-certificateformat", "PEM"))
            .send_json(&body)
            .await;
        let (status, raw) = Self::finish("Post", url, sent).await?;
        if status.as_u16() >= 300 {
            return Err(status_error(status, &raw));
        }
        #[derive(serde::Deserialize)]
        struct Download {
            #[serde(rename = "Content")]
            content: String,
        }
        let d: Download =
            serde_json::from_slice(&raw).map_err(|e| CommandError::Decode(e.to_string()))?;
        use base64::Engine;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(d.content.trim())
            .map_err(|e| CommandError::Decode(format!("certificate content: {e}")))?;
        let text = String::from_utf8_lossy(&pem);
        Ok(text
            .split_inclusive("-----END CERTIFICATE-----")
            .map(|s| s.trim_start().to_string())
            .filter(|s| s.contains("BEGIN CERTIFICATE"))
            .collect())
    }

    /// `POST /Enrollment/CSR` with `x-certificateformat: PEM`.
    pub async fn enroll_csr(
        &self,
        body: &EnrollCsrRequest,
        auth: &SecretString,
    ) -> Result<EnrollCsrResponse, CommandError> {
        let url = format!("{}/Enrollment/CSR", self.base_url);
        let sent = self
            .request(awc::http::Method::POST, "/Enrollment/CSR", auth)
            .insert_header(("x-certificateformat", "PEM"))
            .send_json(body)
            .await;
        let (status, raw) = Self::finish("Post", url, sent).await?;
        if status.as_u16() >= 300 {
            return Err(status_error(status, &raw));
        }
        serde_json::from_slice(&raw).map_err(|e| CommandError::Decode(e.to_string()))
    }
}

fn status_error(status: StatusCode, body: &[u8]) -> CommandError {
    CommandError::Status {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_string(),
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_form_encoded_like_go() {
        assert_eq!(
            crate::auth::urlencode("Name -eq \"Default Pattern\""),
            "Name+-eq+%22Default+Pattern%22"
        );
    }

    #[test]
    fn garbage_ca_bundle_is_refused() {
        let e = build_http_client(Some("not a cert"), Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "failed to append custom CA cert to pool");
    }
}
