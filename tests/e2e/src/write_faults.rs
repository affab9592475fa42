//! A loopback TLS-terminating HTTP/1.1 proxy in front of the kube-apiserver that fails chosen
//! writes, so tests see what the controller does when a write it made did not land, or landed
//! without its answer: a rule matches the method, parts of the request target (path and query)
//! and optionally a part of the body, and fails the next K matching requests in one of two ways:
//!
//! - [`WriteFailure::Reject`]: answered `500` (a Kubernetes `Status`) without forwarding — the
//!   write failed and nothing was applied;
//! - [`WriteFailure::ApplyThenDrop`]: forwarded, and once the apiserver starts answering (so it
//!   has applied the write) the connection is closed without passing the answer on — the write
//!   was applied, then the connection died.
//!
//! Everything else is forwarded byte-exactly. The proxy offers only `http/1.1` in ALPN and
//! parses requests (head, `Content-Length` and chunked bodies) only to find where each one ends;
//! answers are relayed as they come (watches included). It has its own CA and serving
//! certificate for `127.0.0.1`; [`WriteFaultProxy::kubeconfig_via`] writes a kubeconfig that
//! points at it and trusts that CA. Upstream it presents the kubeconfig's client certificate
//! (when it has one), and tokens pass through in the `Authorization` header.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Largest request head accepted (the apiserver's own limit is far above what clients send).
const MAX_HEAD: usize = 1 << 20;

/// How long an [`WriteFailure::ApplyThenDrop`] request waits for the apiserver to start
/// answering before the connection is dropped anyway.
const APPLY_WAIT: Duration = Duration::from_secs(30);

/// Which requests a rule catches: all of method, target parts and body part must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteMatch {
    method: String,
    target_parts: Vec<String>,
    body_part: Option<String>,
}

impl WriteMatch {
    /// Requests with this method (case-insensitive), e.g. `PATCH`.
    pub fn new(method: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            target_parts: Vec::new(),
            body_part: None,
        }
    }

    /// ... whose request target (path and query) contains `part`; may be given several times.
    pub fn path(mut self, part: &str) -> Self {
        self.target_parts.push(part.to_string());
        self
    }

    /// ... whose body (de-chunked) contains `part`, e.g. an annotation key.
    pub fn body(mut self, part: &str) -> Self {
        self.body_part = Some(part.to_string());
        self
    }

    fn matches(&self, req: &ParsedRequest) -> bool {
        req.method.eq_ignore_ascii_case(&self.method)
            && self.target_parts.iter().all(|p| req.target.contains(p))
            && self.body_part.as_ref().is_none_or(|p| {
                p.is_empty() || req.body.windows(p.len()).any(|w| w == p.as_bytes())
            })
    }
}

/// How a caught write fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFailure {
    /// Answer `500 InternalError` without forwarding: the write failed, nothing was applied.
    Reject,
    /// Forward it, let the apiserver apply it, then close the connection without answering.
    ApplyThenDrop,
}

/// A rule's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Requests that matched (also after the rule was spent).
    pub matched: u64,
    /// Requests it failed (at most its K).
    pub failed: u64,
}

/// Handle of a rule, for [`WriteFaultProxy::counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleId(usize);

#[derive(Debug)]
struct Rule {
    matcher: WriteMatch,
    failure: WriteFailure,
    budget: u64,
    counts: WriteCounts,
}

#[derive(Debug, Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    requests: AtomicU64,
    connections: AtomicU64,
}

impl Shared {
    fn rules(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every matching rule counts the request; the first one with budget left fails it.
    fn decide(&self, req: &ParsedRequest) -> Option<WriteFailure> {
        let mut chosen = None;
        for (i, r) in self.rules().iter_mut().enumerate() {
            if !r.matcher.matches(req) {
                continue;
            }
            r.counts.matched += 1;
            if chosen.is_none() && r.counts.failed < r.budget {
                r.counts.failed += 1;
                chosen = Some(r.failure);
                crate::wait::log(format!(
                    "write-fault proxy: rule {i} fails {} {} ({:?}, {}/{})",
                    req.method, req.target, r.failure, r.counts.failed, r.budget
                ));
            }
        }
        chosen
    }
}

/// One request as read from the client: what rules look at, and its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedRequest {
    method: String,
    target: String,
    /// Head and body exactly as received (chunk framing included).
    raw: Vec<u8>,
    /// The body without chunk framing.
    body: Vec<u8>,
}

/// Reads one request; `None` on a clean end of stream before its first byte.
async fn read_request<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<ParsedRequest>> {
    let mut raw = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut raw).await?;
        if n == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            bail!("end of stream inside a request head");
        }
        // Empty lines before a request line are ignored (RFC 9112 §2.2).
        if raw == b"\r\n" || raw == b"\n" {
            raw.clear();
            continue;
        }
        if raw.ends_with(b"\r\n\r\n") || raw.ends_with(b"\n\n") {
            break;
        }
        if raw.len() > MAX_HEAD {
            bail!("request head larger than {MAX_HEAD} bytes");
        }
    }
    let head = std::str::from_utf8(&raw).context("request head is not UTF-8")?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        bail!("bad request line {request_line:?}");
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse()
                    .with_context(|| format!("bad Content-Length {v:?}"))?,
            );
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let start = raw.len();
            if r.read_until(b'\n', &mut raw).await? == 0 {
                bail!("end of stream inside a chunk header");
            }
            let line = std::str::from_utf8(&raw[start..]).context("chunk header")?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            if size == 0 {
                // Trailer fields, then the final empty line.
                loop {
                    let start = raw.len();
                    if r.read_until(b'\n', &mut raw).await? == 0 {
                        bail!("end of stream inside the chunked trailer");
                    }
                    if raw[start..] == *b"\r\n" || raw[start..] == *b"\n" {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk).await?;
            body.extend_from_slice(&chunk[..size]);
            raw.extend_from_slice(&chunk);
        }
    } else if let Some(n) = length {
        let mut b = vec![0u8; n];
        r.read_exact(&mut b).await?;
        raw.extend_from_slice(&b);
        body = b;
    }
    Ok(Some(ParsedRequest {
        method,
        target,
        raw,
        body,
    }))
}

/// The apiserver-shaped answer of a rejected write.
fn rejected_answer(req: &ParsedRequest) -> Vec<u8> {
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("injected by the e2e write-fault proxy: {} {} was not applied", req.method, req.target),
        "reason": "InternalError", "code": 500,
    })
    .to_string();
    format!(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\nContent-Length: {}\r\n\r\n{status}",
        status.len()
    )
    .into_bytes()
}

/// Where and how the proxy connects upstream.
#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    connector: TlsConnector,
    name: ServerName<'static>,
}

/// A running proxy on `127.0.0.1:<port>`; every connection ends when it is dropped.
pub struct WriteFaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for WriteFaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteFaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .finish()
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A fresh CA and a serving certificate for `127.0.0.1`/`localhost` it signed: (CA PEM, chain,
/// key).
fn serving_identity() -> Result<(String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = dn("e2e write-fault proxy CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    leaf.distinguished_name = dn("e2e write-fault proxy");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&key, &issuer)?;
    let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
        .map_err(|e| anyhow!("proxy key: {e}"))?;
    Ok((
        ca_cert.pem(),
        vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        key_der,
    ))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a kubeconfig value that is either inline (`<key>-data`, base64) or a file (`<key>`).
fn kubeconfig_bytes(map: &serde_yaml::Value, key: &str, dir: &Path) -> Result<Option<Vec<u8>>> {
    if let Some(data) = map.get(format!("{key}-data")).and_then(|v| v.as_str()) {
        return Ok(Some(
            B64.decode(data.trim())
                .with_context(|| format!("{key}-data"))?,
        ));
    }
    if let Some(file) = map.get(key).and_then(|v| v.as_str()) {
        let p = dir.join(file);
        return Ok(Some(
            std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
        ));
    }
    Ok(None)
}

/// The entry of `list` named by the current context's `field`, else the first one.
fn current<'a>(
    doc: &'a serde_yaml::Value,
    list: &str,
    field: &str,
) -> Option<&'a serde_yaml::Value> {
    let wanted = doc
        .get("current-context")
        .and_then(|c| c.as_str())
        .and_then(|name| {
            doc.get("contexts")?
                .as_sequence()?
                .iter()
                .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(name))
        })
        .and_then(|c| c.get("context")?.get(field)?.as_str());
    let entries = doc.get(list)?.as_sequence()?;
    entries
        .iter()
        .find(|e| wanted.is_some() && e.get("name").and_then(|n| n.as_str()) == wanted)
        .or_else(|| entries.first())
}

impl WriteFaultProxy {
    /// A proxy in front of the apiserver of `kubeconfig` (its current cluster and user): it
    /// trusts that cluster's CA and presents that user's client certificate, if any.
    pub async fn start(kubeconfig: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text)?;
        let dir = kubeconfig
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let cluster = current(&doc, "clusters", "cluster")
            .and_then(|c| c.get("cluster"))
            .context("kubeconfig without a cluster")?;
        let server = cluster
            .get("server")
            .and_then(|s| s.as_str())
            .context("cluster without server")?;
        let host_port = server
            .strip_prefix("https://")
            .context("only https servers are supported")?
            .trim_end_matches('/');
        let host = host_port
            .rsplit_once(':')
            .map_or(host_port, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addr = tokio::net::lookup_host(host_port)
            .await?
            .next()
            .with_context(|| format!("resolving {host_port}"))?;
        let mut roots = rustls::RootCertStore::empty();
        let ca = kubeconfig_bytes(cluster, "certificate-authority", &dir)?
            .context("cluster without certificate-authority")?;
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.map_err(|e| anyhow!("cluster CA: {e}"))?)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let user = current(&doc, "users", "user").and_then(|u| u.get("user"));
        let cert = user
            .map(|u| kubeconfig_bytes(u, "client-certificate", &dir))
            .transpose()?
            .flatten();
        let key = user
            .map(|u| kubeconfig_bytes(u, "client-key", &dir))
            .transpose()?
            .flatten();
        let mut tls = match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow!("client certificate: {e}"))?;
                let key =
                    PrivateKeyDer::from_pem_slice(&key).map_err(|e| anyhow!("client key: {e}"))?;
                builder.with_client_auth_cert(chain, key)?
            }
            _ => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(host).map_err(|e| anyhow!("server name: {e}"))?;
        Self::start_with(addr, tls, name).await
    }

    /// A proxy to `upstream`, connecting with `tls` and verifying `name`.
    pub async fn start_with(
        upstream: SocketAddr,
        tls: rustls::ClientConfig,
        name: ServerName<'static>,
    ) -> Result<Self> {
        let (ca_pem, chain, key) = serving_identity()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // HTTP/1.1 only, so requests can be told apart on the wire.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let up = Upstream {
            addr: upstream,
            connector: TlsConnector::from(Arc::new(tls)),
            name,
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the write-fault proxy")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            // Dropped with the accept task (the proxy's drop): every connection ends with it.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                s.connections.fetch_add(1, Ordering::Relaxed);
                let (acceptor, up, s) = (acceptor.clone(), up.clone(), s.clone());
                connections.spawn(async move {
                    if let Err(e) = serve(tcp, acceptor, up, s).await {
                        tracing::debug!(target: "e2e", "write-fault proxy connection: {e:#}");
                    }
                });
            }
        });
        crate::wait::log(format!("write-fault proxy {addr} → {upstream}"));
        Ok(Self {
            addr,
            upstream,
            ca_pem,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA behind the proxy's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Fails the next `k` requests that `matcher` catches with `failure`; rules are tried in the
    /// order they were added, every matching rule counts a request, the first with budget left
    /// fails it.
    pub fn fail_next(&self, matcher: WriteMatch, failure: WriteFailure, k: u64) -> RuleId {
        let mut rules = self.shared.rules();
        rules.push(Rule {
            matcher,
            failure,
            budget: k,
            counts: WriteCounts::default(),
        });
        RuleId(rules.len() - 1)
    }

    /// A rule's counters.
    pub fn counts(&self, id: RuleId) -> WriteCounts {
        self.shared
            .rules()
            .get(id.0)
            .map(|r| r.counts)
            .unwrap_or_default()
    }

    /// Requests read so far (all methods).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Writes a copy of `kubeconfig` whose clusters point at this proxy and trust its CA (users
    /// unchanged), so a process started with it reaches the apiserver only through the proxy.
    pub fn kubeconfig_via(&self, kubeconfig: &Path, out: &Path) -> Result<PathBuf> {
        let text = std::fs::read_to_string(kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text)?;
        let clusters = doc
            .get_mut("clusters")
            .and_then(serde_yaml::Value::as_sequence_mut)
            .context("kubeconfig without clusters")?;
        for c in clusters {
            if let Some(cluster) = c.get_mut("cluster").and_then(|v| v.as_mapping_mut()) {
                cluster.insert("server".into(), format!("https://{}", self.addr).into());
                cluster.insert(
                    "certificate-authority-data".into(),
                    B64.encode(&self.ca_pem).into(),
                );
                cluster.remove("certificate-authority");
                cluster.remove("tls-server-name");
                cluster.remove("insecure-skip-tls-verify");
            }
        }
        std::fs::write(out, serde_yaml::to_string(&doc)?)
            .with_context(|| format!("writing {}", out.display()))?;
        Ok(out.to_path_buf())
    }
}

impl Drop for WriteFaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Relays the apiserver's answers to the client until either side closes; once `muted`, the
/// next bytes (the answer to a request that is to be dropped) are not passed on: `answered` is
/// notified instead and the relay ends.
async fn relay<R, W>(
    mut from: R,
    to: Arc<tokio::sync::Mutex<W>>,
    muted: Arc<AtomicBool>,
    answered: Arc<Notify>,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.lock().await.shutdown().await;
                answered.notify_one();
                return;
            }
            Ok(n) => n,
        };
        if muted.load(Ordering::SeqCst) {
            answered.notify_one();
            return;
        }
        let mut w = to.lock().await;
        if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
}

/// One client connection: TLS accepted, one upstream TLS connection, requests forwarded in
/// order (HTTP/1.1 clients do not pipeline, so an answer is complete before the next request).
async fn serve(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    up: Upstream,
    shared: Arc<Shared>,
) -> Result<()> {
    let _ = tcp.set_nodelay(true);
    let client = acceptor.accept(tcp).await.context("TLS accept")?;
    let up_tcp = TcpStream::connect(up.addr)
        .await
        .context("connecting upstream")?;
    let _ = up_tcp.set_nodelay(true);
    let upstream = up
        .connector
        .connect(up.name.clone(), up_tcp)
        .await
        .context("upstream TLS")?;
    let (client_r, client_w) = tokio::io::split(client);
    let (up_r, mut up_w) = tokio::io::split(upstream);
    let client_w = Arc::new(tokio::sync::Mutex::new(client_w));
    let muted = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Notify::new());
    let relay = tokio::spawn(relay(
        up_r,
        client_w.clone(),
        muted.clone(),
        answered.clone(),
    ));
    let mut reader = tokio::io::BufReader::new(client_r);
    let result = async {
        while let Some(req) = read_request(&mut reader).await? {
            shared.requests.fetch_add(1, Ordering::Relaxed);
            match shared.decide(&req) {
                None => {
                    up_w.write_all(&req.raw).await?;
                    up_w.flush().await?;
                }
                Some(WriteFailure::Reject) => {
                    let mut w = client_w.lock().await;
                    w.write_all(&rejected_answer(&req)).await?;
                    w.flush().await?;
                }
                Some(WriteFailure::ApplyThenDrop) => {
                    muted.store(true, Ordering::SeqCst);
                    up_w.write_all(&req.raw).await?;
                    up_w.flush().await?;
                    // The apiserver answers once the write is stored; then the client's
                    // connection goes without that answer.
                    let _ = tokio::time::timeout(APPLY_WAIT, answered.notified()).await;
                    return Ok(());
                }
            }
        }
        let _ = up_w.shutdown().await;
        Ok(())
    }
    .await;
    relay.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    /// An HTTPS upstream that answers every request `200` with `<method> <target> <body>` and
    /// records the raw requests it received.
    async fn upstream() -> Result<(SocketAddr, rustls::ClientConfig, Arc<Mutex<Vec<Vec<u8>>>>)> {
        let (ca_pem, chain, key) = serving_identity()?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (r, mut w) = tokio::io::split(tls);
                    let mut r = BufReader::new(r);
                    while let Ok(Some(req)) = read_request(&mut r).await {
                        seen.lock().unwrap().push(req.raw.clone());
                        let body = format!(
                            "{} {} {}",
                            req.method,
                            req.target,
                            String::from_utf8_lossy(&req.body)
                        );
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if w.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok((addr, tls, seen))
    }

    type Conn = tokio_rustls::client::TlsStream<TcpStream>;

    async fn connect(proxy: &WriteFaultProxy) -> Result<BufReader<Conn>> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(proxy.ca_pem().as_bytes()) {
            roots.add(c?)?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(proxy.addr()).await?;
        let conn = TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from("127.0.0.1")?, tcp)
            .await?;
        assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        Ok(BufReader::new(conn))
    }

    /// Sends `raw` and reads one `Content-Length` answer: (status, body); `None` when the
    /// connection ends first.
    async fn exchange(c: &mut BufReader<Conn>, raw: &[u8]) -> Result<Option<(u16, String)>> {
        c.get_mut().write_all(raw).await?;
        c.get_mut().flush().await?;
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match tokio::time::timeout(Duration::from_secs(5), c.read_line(&mut line)).await? {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("status")?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .context("length")?;
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).await?;
        Ok(Some((status, String::from_utf8(body)?)))
    }

    #[tokio::test]
    async fn rejects_forwards_byte_exactly_and_drops_after_applying() -> Result<()> {
        let (addr, tls, seen) = upstream().await?;
        let proxy =
            WriteFaultProxy::start_with(addr, tls, ServerName::try_from("127.0.0.1")?).await?;
        let reject = proxy.fail_next(
            WriteMatch::new("patch").path("/status").body("intent"),
            WriteFailure::Reject,
            1,
        );
        let mut c = connect(&proxy).await?;
        let get = b"GET /api/x?watch=false HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(
            exchange(&mut c, get).await?,
            Some((200, "GET /api/x?watch=false ".into()))
        );
        let patch = b"PATCH /a/status?force=true HTTP/1.1\r\nHost: h\r\nContent-Length: 15\r\n\r\n{\"intent\":\"x\"}\n";
        let (status, body) = exchange(&mut c, patch).await?.context("rejected answer")?;
        assert_eq!(status, 500);
        assert!(body.contains("\"reason\":\"InternalError\""), "{body}");
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "a rejected write is not forwarded"
        );
        // Spent: the same write goes through, chunked, byte for byte, on the same connection.
        let chunked = b"PATCH /a/status HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\n{\"int\r\n9\r\nent\":\"y\"}\r\n0\r\n\r\n";
        assert_eq!(
            exchange(&mut c, chunked).await?,
            Some((200, "PATCH /a/status {\"intent\":\"y\"}".into()))
        );
        assert_eq!(seen.lock().unwrap()[1], chunked.to_vec());
        assert_eq!(
            proxy.counts(reject),
            WriteCounts {
                matched: 2,
                failed: 1
            }
        );
        // Applied, then the connection dies without the answer.
        let drop = proxy.fail_next(
            WriteMatch::new("PUT").path("/b"),
            WriteFailure::ApplyThenDrop,
            1,
        );
        let put = b"PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(exchange(&mut c, put).await?, None);
        assert_eq!(
            seen.lock().unwrap().len(),
            3,
            "the dropped write was applied"
        );
        let mut c = connect(&proxy).await?;
        assert_eq!(
            exchange(&mut c, put).await?,
            Some((200, "PUT /b {}".into()))
        );
        assert_eq!(
            proxy.counts(drop),
            WriteCounts {
                matched: 2,
                failed: 1
            }
        );
        assert_eq!((proxy.requests(), proxy.connections()), (5, 2));
        Ok(())
    }
}
