//! The four Command calls the issuer makes, over one awc client per issuer connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The query `<field> -eq "<value>"`, refused when either could break out of its quotes or
/// add a clause (the value may come from an object a user can edit).
pub fn metadata_query(field: &str, value: &str) -> Result<String, CommandError> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
    };
    if !plain(field) {
        return Err(CommandError::Query(field.to_string()));
    }
    if !plain(value) {
        return Err(CommandError::Query(value.to_string()));
    }
    Ok(format!("{field} -eq \"{value}\""))
}

/// Bound on one call (head and body) of a [`CommandClient`] not given one with
/// [`CommandClient::with_timeout`]; the `--command-timeout` default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One Command instance as seen by one issuer: base URL plus HTTP client.
#[derive(Clone)]
pub struct CommandClient {
    http: awc::Client,
    base_url: String,
    timeout: Duration,
}

impl CommandClient {
    /// Wraps an HTTP client for `https://host/apiPath`.
    pub fn new(http: awc::Client, base_url: String) -> Self {
        Self {
            http,
            base_url,
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Bounds each call, response body included: awc's own timeout stops at the response head,
    /// so a body that trickles in (or stalls) would otherwise hold the call for ever.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
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

    /// Reads the answer to a sent request; the body must arrive within what is left of the
    /// call's timeout, counted from `started`.
    async fn finish<S>(
        &self,
        method: &'static str,
        url: String,
        started: Instant,
        sent: Result<awc::ClientResponse<S>, awc::error::SendRequestError>,
    ) -> Result<Answer, CommandError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    {
        let resp = sent.map_err(|e| CommandError::Transport {
            method,
            url: url.clone(),
            cause: e.to_string(),
        })?;
        let mut resp = resp.timeout(self.timeout.saturating_sub(started.elapsed()));
        let retry_after = resp
            .headers()
            .get(awc::http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
        let body = resp
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| CommandError::Transport {
                method,
                url,
                cause: format!("reading body: {e}"),
            })?;
        Ok(Answer {
            status: resp.status(),
            retry_after,
            body: body.to_vec(),
        })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        auth: &SecretString,
        exactly_200: bool,
    ) -> Result<T, CommandError> {
        let url = format!("{}{}", self.base_url, path_and_query);
        let started = Instant::now();
        let sent = self
            .request(awc::http::Method::GET, path_and_query, auth)
            .insert_header(("Content-Type", "application/json"))
            .send()
            .await;
        let answer = self.finish("Get", url, started, sent).await?;
        let ok = if exactly_200 {
            answer.status == StatusCode::OK
        } else {
            answer.status.as_u16() < 300
        };
        if !ok {
            return Err(answer.into_error());
        }
        serde_json::from_slice(&answer.body).map_err(|e| CommandError::Decode(e.to_string()))
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
        let q = crate::auth::urlencode(&metadata_query(field, value)?);
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
        let started = Instant::now();
        let sent = self
            .request(awc::http::Method::POST, "/Certificates/Download", auth)
            .insert_header(("x-certificateformat", "PEM"))
            .send_json(&body)
            .await;
        let answer = self.finish("Post", url, started, sent).await?;
        if answer.status.as_u16() >= 300 {
            return Err(answer.into_error());
        }
        let raw = answer.body;
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
        let started = Instant::now();
        let sent = self
            .request(awc::http::Method::POST, "/Enrollment/CSR", auth)
            .insert_header(("x-certificateformat", "PEM"))
            .send_json(body)
            .await;
        let answer = self.finish("Post", url, started, sent).await?;
        if answer.status.as_u16() >= 300 {
            return Err(answer.into_error());
        }
        let raw = answer.body;
        serde_json::from_slice(&raw).map_err(|e| CommandError::Decode(e.to_string()))
    }
}

/// A complete HTTP answer: status, parsed `Retry-After` and body.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Answer {
    fn into_error(self) -> CommandError {
        CommandError::Status {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("").to_string(),
            body: String::from_utf8_lossy(&self.body).into_owned(),
            retry_after: self.retry_after,
        }
    }
}

/// Longest `Retry-After` taken from Command; a larger value (or a far-future date) is cut to
/// this, so one odd header cannot park a request for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Reads a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an HTTP date, as the delay
/// from `now`. A date in the past is no delay; anything else unreadable is `None`, so a bad
/// header never stops a retry.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: too many of them for a u64 still means "a long time".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    static HTTP_DATE: jiff::fmt::rfc2822::DateTimeParser =
        jiff::fmt::rfc2822::DateTimeParser::new();
    let at = HTTP_DATE.parse_timestamp(value).ok()?;
    let delay = at.duration_since(now);
    Some(if delay.is_negative() {
        Duration::ZERO
    } else {
        Duration::try_from(delay)
            .unwrap_or(MAX_RETRY_AFTER)
            .min(MAX_RETRY_AFTER)
    })
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
    fn retry_after_seconds_and_http_dates() {
        let now: jiff::Timestamp = "2026-06-03T12:00:00Z".parse().unwrap();
        let p = |v| parse_retry_after(v, now);
        assert_eq!(p("3"), Some(Duration::from_secs(3)));
        assert_eq!(p(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(p("0"), Some(Duration::ZERO));
        // IMF-fixdate, the form RFC 9110 requires senders to use.
        assert_eq!(
            p("Wed, 03 Jun 2026 12:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        // A date already past: retry at once.
        assert_eq!(p("Wed, 03 Jun 2026 11:00:00 GMT"), Some(Duration::ZERO));
        // Absurd values are capped, unreadable ones ignored.
        assert_eq!(p("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(p("Fri, 03 Jun 2044 12:00:00 GMT"), Some(MAX_RETRY_AFTER));
        for bad in ["", "soon", "-5", "1.5", "3 s"] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_hostile_values_never_panic() {
        let now: jiff::Timestamp = "2026-06-03T12:00:00Z".parse().unwrap();
        let p = |v: &str| parse_retry_after(v, now);
        // 2^63, u64::MAX and past it: capped at an hour.
        for huge in [
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            &"9".repeat(1000),
        ] {
            assert_eq!(p(huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
        // Almost the last date jiff represents, and the first: capped, or no delay.
        assert_eq!(p("Thu, 30 Dec 9999 21:59:59 GMT"), Some(MAX_RETRY_AFTER));
        assert_eq!(p("Mon, 01 Jan 0001 00:00:00 GMT"), Some(Duration::ZERO));
        // Negative, float, 1e300 and out-of-range dates: ignored.
        for bad in [
            "-1",
            "-9223372036854775808",
            "1e300",
            "3600.0",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Sat, 01 Jan 10000 00:00:00 GMT",
            "Fri, 32 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        // From the extreme ends of jiff's range as "now", too.
        assert_eq!(
            parse_retry_after("Thu, 30 Dec 9999 21:59:59 GMT", jiff::Timestamp::MIN),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 0001 00:00:00 GMT", jiff::Timestamp::MAX),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_counts_for_429_and_503_only() {
        let e = |status| CommandError::Status {
            status,
            reason: String::new(),
            body: String::new(),
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(e(429).retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(e(503).retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(e(500).retry_after(), None);
        assert_eq!(e(400).retry_after(), None);
    }

    /// A server that sends the head and the start of the body, then stalls.
    fn stalling_server() -> std::net::SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[",
                );
                // Hold the connection open without finishing the body.
                std::thread::sleep(Duration::from_secs(5));
            }
        });
        addr
    }

    #[actix_rt::test]
    async fn a_stalled_body_fails_within_the_call_timeout() {
        let addr = stalling_server();
        let http = build_http_client(None, Duration::from_millis(300)).unwrap();
        let client = CommandClient::new(http, format!("http://{addr}"))
            .with_timeout(Duration::from_millis(300));
        let t = Instant::now();
        let e = client
            .status_endpoints(&SecretString::from("Basic x"))
            .await
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(
            matches!(&e, CommandError::Transport { cause, .. } if cause.starts_with("reading body")),
            "{e:?}"
        );
    }

    #[test]
    fn garbage_ca_bundle_is_refused() {
        let e = build_http_client(Some("not a cert"), Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "failed to append custom CA cert to pool");
    }

    #[test]
    fn metadata_queries_cannot_be_broken_out_of() {
        assert_eq!(
            metadata_query("Controller-Reconcile-Id", "5f1c-9a").unwrap(),
            "Controller-Reconcile-Id -eq \"5f1c-9a\""
        );
        for hostile in ["x\" OR CN -eq \"y", "a b", "", "x\\", "é"] {
            assert_eq!(
                metadata_query("Controller-Reconcile-Id", hostile),
                Err(CommandError::Query(hostile.to_string()))
            );
        }
        assert!(metadata_query("CN -eq 1 OR x", "v").is_err());
    }
}
