//! A minimal HTTP/1.1 client (plain or rustls) for health probes and the simulator's admin API,
//! independent of any async runtime flavour (awc needs an actix System; tests run on tokio).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Time limit of one request, so a hung peer fails a poll instead of the whole test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response: status code and body bytes.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// Body as (lossy) text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body parsed as JSON, failing with the status and body when it is not 2xx JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        if !(200..300).contains(&self.status) {
            bail!("HTTP {}: {}", self.status, self.text());
        }
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response is not the expected JSON: {}", self.text()))
    }
}

/// Client for one `host:port`, plain or TLS with a given trust anchor.
#[derive(Clone)]
pub struct HttpClient {
    addr: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl HttpClient {
    /// Plain HTTP to `addr` (`127.0.0.1:PORT`).
    pub fn plain(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
            tls: None,
        }
    }

    /// HTTPS to `addr`, trusting only the CA(s) in `ca_pem`, verifying `server_name`.
    pub fn tls(addr: &str, ca_pem: &str, server_name: &str) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.context("bad CA PEM")?)?;
        }
        if roots.is_empty() {
            bail!("no CA certificate in the trust PEM");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| anyhow!("bad server name {server_name}: {e}"))?;
        Ok(Self {
            addr: addr.to_string(),
            tls: Some((TlsConnector::from(Arc::new(config)), name)),
        })
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Result<Response> {
        self.request("GET", path, None).await
    }

    /// POST `path` with an optional JSON body.
    pub async fn post(&self, path: &str, json: Option<&serde_json::Value>) -> Result<Response> {
        let body = json.map(serde_json::to_vec).transpose()?;
        self.request("POST", path, body.as_deref()).await
    }

    /// One request on a fresh connection (Connection: close), bounded by [`REQUEST_TIMEOUT`].
    pub async fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.request_inner(method, path, body))
            .await
            .map_err(|_| anyhow!("{method} {path} on {} timed out", self.addr))?
            .with_context(|| format!("{method} {path} on {}", self.addr))
    }

    async fn request_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let tcp = TcpStream::connect(&self.addr).await?;
        match &self.tls {
            None => exchange(tcp, &self.addr, method, path, body).await,
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                exchange(tls, &self.addr, method, path, body).await
            }
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response> {
    let body = body.unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify; keep whatever arrived.
    if let Err(e) = stream.read_to_end(&mut raw).await {
        if raw.is_empty() {
            return Err(e.into());
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header terminator in {} bytes", raw.len()))?;
    let head = std::str::from_utf8(&raw[..split])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k == "content-length" {
            length = v.parse::<usize>().ok();
        }
    }
    let rest = &raw[split + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| anyhow!("body shorter than Content-Length {n}"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk header"))?;
        let size_str = std::str::from_utf8(&data[..eol])?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_str:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokXX").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
    }
}
