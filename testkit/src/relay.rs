//! A loopback TCP relay that a test can freeze: while frozen it forwards nothing in either
//! direction (bytes read are held) yet closes nothing, like a network that silently drops
//! packets — a database link that hangs, or a phone that lost its network without a FIN or an
//! RST. Thawed, it forwards what it held and carries on.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay to one server; every connection made to [`FreezableRelay::addr`] is relayed.
#[derive(Debug)]
pub struct FreezableRelay {
    pub addr: std::net::SocketAddr,
    frozen: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl FreezableRelay {
    /// Relays connections to `target` (`host:port`) from a fresh loopback port.
    pub async fn start(target: String) -> FreezableRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let (frozen, _) = watch::channel(false);
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (held, watch) = (links.clone(), frozen.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (in_r, in_w) = inbound.into_split();
                let (out_r, out_w) = outbound.into_split();
                let mut held = held.lock().expect("relay links");
                held.push(tokio::spawn(pump(in_r, out_w, watch.subscribe())));
                held.push(tokio::spawn(pump(out_r, in_w, watch.subscribe())));
            }
        });
        FreezableRelay {
            addr,
            frozen,
            accept,
            links,
        }
    }

    /// Stops forwarding (nothing is closed).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, starting with what was held.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for FreezableRelay {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut links) = self.links.lock() {
            for l in links.drain(..) {
                l.abort();
            }
        }
    }
}

/// Copies one direction of a link, never while frozen; an end or an error closes the other side
/// for writing.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just as the link froze are held until it thaws.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
