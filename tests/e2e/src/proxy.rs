//! A loopback TCP proxy that can drop every connection on demand, so fault tests cut watch
//! streams and in-flight requests without touching the kube-apiserver; and, lingering, one that
//! keeps a request going to the server after its client has gone, as a load balancer in front of
//! Command may (the server then completes work whose answer nobody reads). TLS passes through
//! untouched: the servers' certificates name 127.0.0.1, which the proxy's address still is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

#[derive(Debug, Default)]
struct Shared {
    live: Mutex<HashMap<u64, AbortHandle>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    cut: AtomicU64,
}

impl Shared {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy on `127.0.0.1:<port>`; stops (dropping every connection) on drop.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`; a failed
    /// upstream connect (apiserver down) closes the client's connection at once.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        Self::spawn(upstream, None).await
    }

    /// Like [`TcpProxy::start`], but when a client goes away (closes, times out, is killed) its
    /// upstream connection stays open for up to `linger`, so the server never notices and
    /// finishes the request; what it answers is discarded.
    pub async fn start_lingering(upstream: SocketAddr, linger: Duration) -> Result<Self> {
        Self::spawn(upstream, Some(linger)).await
    }

    async fn spawn(upstream: SocketAddr, linger: Option<Duration>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy listener")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::Relaxed);
                let id = s.next_id.fetch_add(1, Ordering::Relaxed);
                let s2 = s.clone();
                // Hold the lock across spawn + insert so the task's own removal cannot run first.
                let mut live = s.live();
                let task = tokio::spawn(async move {
                    match linger {
                        None => pipe(client, upstream).await,
                        Some(l) => pipe_lingering(client, upstream, l).await,
                    }
                    s2.live().remove(&id);
                });
                live.insert(id, task.abort_handle());
            }
        });
        crate::wait::log(format!("tcp proxy {addr} → {upstream}"));
        Ok(Self {
            addr,
            upstream,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections go.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Drops every open connection (both sides closed); returns how many were cut.
    pub fn cut_all(&self) -> usize {
        let cut: Vec<AbortHandle> = self.shared.live().drain().map(|(_, h)| h).collect();
        for h in &cut {
            h.abort();
        }
        self.shared
            .cut
            .fetch_add(cut.len() as u64, Ordering::Relaxed);
        cut.len()
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.live().len()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections cut so far by [`TcpProxy::cut_all`].
    pub fn cut_total(&self) -> u64 {
        self.shared.cut.load(Ordering::Relaxed)
    }

    /// Writes a copy of `kubeconfig` whose clusters point at this proxy, so a process started
    /// with it reaches the apiserver only through the proxy.
    pub fn kubeconfig_via(&self, kubeconfig: &Path, out: &Path) -> Result<()> {
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
            }
        }
        std::fs::write(out, serde_yaml::to_string(&doc)?)
            .with_context(|| format!("writing {}", out.display()))
    }
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// Client→server until the client goes; server→client until the server closes, discarding what
/// the client can no longer take, for at most `linger` after the client went.
async fn pipe_lingering(client: TcpStream, upstream: SocketAddr, linger: Duration) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        // Keep `sw` (the server's view of the request) open: no FIN towards the server.
        sw
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut client_open = true;
        while let Ok(n) = sr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if client_open && cw.write_all(&buf[..n]).await.is_err() {
                client_open = false;
            }
        }
        let _ = cw.shutdown().await;
    };
    let mut down = Box::pin(down);
    tokio::select! {
        () = &mut down => {}
        sw = up => {
            let _ = tokio::time::timeout(linger, &mut down).await;
            drop(sw);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_and_cuts() -> Result<()> {
        let echo = TcpListener::bind("127.0.0.1:0").await?;
        let echo_addr = echo.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = TcpProxy::start(echo_addr).await?;
        let mut c = TcpStream::connect(proxy.addr()).await?;
        c.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        assert_eq!(proxy.cut_all(), 1);
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf))
            .await?
            .unwrap_or(0);
        assert_eq!(n, 0, "the cut connection is closed");
        assert_eq!((proxy.accepted(), proxy.cut_total()), (1, 1));
        Ok(())
    }
}
