//! A loopback TCP proxy that can drop every connection on demand, so fault tests cut watch
//! streams and in-flight requests without touching the kube-apiserver; and, lingering, one that
//! keeps a request going to the server after its client has gone, as a load balancer in front of
//! Command may (the server then completes work whose answer nobody reads). Either kind can also
//! stall: forward nothing, in either direction, on every open and new connection for a while,
//! keeping them open, as a hung apiserver or a black-holing network does. TLS passes through
//! untouched: the servers' certificates name 127.0.0.1, which the proxy's address still is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

#[derive(Debug)]
struct Shared {
    live: Mutex<HashMap<u64, AbortHandle>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    cut: AtomicU64,
    /// Stall generation: 0 = forwarding; n > 0 = stalled by the n-th stall (so the timer of an
    /// older `stall_for` cannot end a newer stall).
    stall: watch::Sender<u64>,
    stalls: AtomicU64,
    /// Connections with an id below this never forward again ([`TcpProxy::black_hole`]).
    dead_below: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            live: Mutex::default(),
            next_id: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            stall: watch::Sender::new(0),
            stalls: AtomicU64::new(0),
            dead_below: AtomicU64::new(0),
        }
    }
}

impl Shared {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a connection checks before forwarding each chunk.
#[derive(Debug, Clone)]
struct Gate {
    stall: watch::Receiver<u64>,
    id: u64,
    shared: Arc<Shared>,
}

impl Gate {
    /// Waits until the proxy is not stalled (returns at once when it is not); never returns
    /// for a black-holed connection (whose task then ends only by a cut or the proxy's drop).
    async fn open(&mut self) {
        if self.id < self.shared.dead_below.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        // Err only when the sender (the proxy) is gone; then the task is being aborted anyway.
        let _ = self.stall.wait_for(|g| *g == 0).await;
        if self.id < self.shared.dead_below.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

/// Copies `from` → `to` until EOF (then shuts `to` down), holding each chunk while stalled.
async fn gated_copy<R, W>(mut from: R, mut to: W, mut gate: Gate) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        gate.open().await;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
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
                let gate = Gate {
                    stall: s.stall.subscribe(),
                    id,
                    shared: s.clone(),
                };
                // Hold the lock across spawn + insert so the task's own removal cannot run first.
                let mut live = s.live();
                let task = tokio::spawn(async move {
                    match linger {
                        None => pipe(client, upstream, gate).await,
                        Some(l) => pipe_lingering(client, upstream, l, gate).await,
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

    /// Stops forwarding, in both directions, on every open connection and every one accepted
    /// from now on, until [`TcpProxy::resume`]: connections stay open (no FIN, no RST), bytes
    /// already read are held, so both peers see a connection that has gone silent.
    pub fn stall(&self) {
        let generation = self.shared.stalls.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.stall.send_replace(generation);
        crate::wait::log(format!("tcp proxy {} stalled", self.addr));
    }

    /// Forwards again on every connection (held bytes first); no-op when not stalled.
    pub fn resume(&self) {
        if self.shared.stall.send_replace(0) != 0 {
            crate::wait::log(format!("tcp proxy {} resumed", self.addr));
        }
    }

    /// [`TcpProxy::stall`] now and [`TcpProxy::resume`] after `duration` (unless a later stall
    /// or resume came first); returns at once with the instant the stall is due to end, so
    /// callers can measure from it.
    pub fn stall_for(&self, duration: Duration) -> Instant {
        self.stall();
        let generation = *self.shared.stall.borrow();
        let shared = Arc::downgrade(&self.shared);
        let addr = self.addr;
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            if let Some(s) = shared.upgrade() {
                let ended = s.stall.send_if_modified(|g| {
                    let mine = *g == generation;
                    if mine {
                        *g = 0;
                    }
                    mine
                });
                if ended {
                    crate::wait::log(format!("tcp proxy {addr} resumed after {duration:.1?}"));
                }
            }
        });
        Instant::now() + duration
    }

    /// Every connection open now (stalled or not) never forwards another byte, yet stays open,
    /// as when a network path silently drops its packets for good; connections accepted later
    /// are unaffected (by this; a [`TcpProxy::stall`] still holds them). So clients that wait
    /// without a deadline on an old connection hang, and clients that give up and reconnect
    /// get through.
    pub fn black_hole(&self) {
        let below = self.shared.next_id.load(Ordering::SeqCst);
        self.shared.dead_below.fetch_max(below, Ordering::SeqCst);
        crate::wait::log(format!(
            "tcp proxy {} black-holed its {} open connections",
            self.addr,
            self.open()
        ));
    }

    /// True while stalled.
    pub fn is_stalled(&self) -> bool {
        *self.shared.stall.borrow() != 0
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

async fn pipe(client: TcpStream, upstream: SocketAddr, gate: Gate) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Each direction half-closes on its own EOF; the first error ends both (as
    // copy_bidirectional does).
    let _ = tokio::try_join!(gated_copy(cr, sw, gate.clone()), gated_copy(sr, cw, gate));
}

/// Client→server until the client goes; server→client until the server closes, discarding what
/// the client can no longer take, for at most `linger` after the client went.
async fn pipe_lingering(client: TcpStream, upstream: SocketAddr, linger: Duration, gate: Gate) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up_gate = gate.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            up_gate.open().await;
            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        // Keep `sw` (the server's view of the request) open: no FIN towards the server.
        sw
    };
    let mut down_gate = gate;
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut client_open = true;
        while let Ok(n) = sr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            down_gate.open().await;
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

    async fn echo_server() -> Result<SocketAddr> {
        let echo = TcpListener::bind("127.0.0.1:0").await?;
        let addr = echo.local_addr()?;
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
        Ok(addr)
    }

    #[tokio::test]
    async fn stalls_open_and_new_connections_then_resumes() -> Result<()> {
        let proxy = TcpProxy::start(echo_server().await?).await?;
        let mut old = TcpStream::connect(proxy.addr()).await?;
        old.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        old.read_exact(&mut buf).await?;
        proxy.stall();
        assert!(proxy.is_stalled());
        let mut new = TcpStream::connect(proxy.addr()).await?;
        old.write_all(b"old!").await?;
        new.write_all(b"new!").await?;
        // Nothing comes back while stalled (a bounded wait that must run out).
        let quiet = Duration::from_millis(300);
        assert!(tokio::time::timeout(quiet, old.read(&mut buf))
            .await
            .is_err());
        assert!(tokio::time::timeout(quiet, new.read(&mut buf))
            .await
            .is_err());
        assert_eq!(proxy.open(), 2, "stalled connections stay open");
        proxy.resume();
        let five = Duration::from_secs(5);
        tokio::time::timeout(five, old.read_exact(&mut buf)).await??;
        assert_eq!(&buf, b"old!");
        tokio::time::timeout(five, new.read_exact(&mut buf)).await??;
        assert_eq!(&buf, b"new!");
        // stall_for ends by itself.
        let until = proxy.stall_for(Duration::from_millis(200));
        old.write_all(b"late").await?;
        tokio::time::timeout(five, old.read_exact(&mut buf)).await??;
        assert_eq!(&buf, b"late");
        assert!(Instant::now() >= until, "answered before the stall ended");
        assert!(!proxy.is_stalled());
        Ok(())
    }

    #[tokio::test]
    async fn black_holed_connections_stay_open_and_silent_new_ones_flow() -> Result<()> {
        let proxy = TcpProxy::start(echo_server().await?).await?;
        let mut before = TcpStream::connect(proxy.addr()).await?;
        before.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        before.read_exact(&mut buf).await?;
        proxy.stall();
        let mut during = TcpStream::connect(proxy.addr()).await?;
        during.write_all(b"lost").await?;
        // Accepted by the proxy (not just by the kernel's backlog) before the black hole.
        crate::wait::wait_for(Duration::from_secs(5), "the proxy to accept", || async {
            (proxy.accepted() == 2).then_some(())
        })
        .await?;
        proxy.black_hole();
        proxy.resume();
        let mut after = TcpStream::connect(proxy.addr()).await?;
        after.write_all(b"new!").await?;
        let five = Duration::from_secs(5);
        tokio::time::timeout(five, after.read_exact(&mut buf)).await??;
        assert_eq!(&buf, b"new!");
        before.write_all(b"gone").await?;
        let quiet = Duration::from_millis(300);
        assert!(tokio::time::timeout(quiet, before.read(&mut buf))
            .await
            .is_err());
        assert!(tokio::time::timeout(quiet, during.read(&mut buf))
            .await
            .is_err());
        assert_eq!(proxy.open(), 3, "black-holed connections stay open");
        Ok(())
    }

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
