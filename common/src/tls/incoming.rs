//! The TLS handshakes in front of the shared serve loop. Connections are
//! accepted on the plane's listener and their handshakes run concurrently,
//! each within [`HANDSHAKE_TIMEOUT`], so a slow, silent or plaintext client
//! never holds up the next one; established streams go to the server in the
//! order their handshakes finish. A failed handshake (a plaintext client on
//! a TLS port, an untrusted certificate) closes that connection only.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; connections beyond are closed at once
/// (bounds the memory a flood of idle connections can pin).
const MAX_HANDSHAKES: usize = 1024;

/// Established TLS connections, as the server takes them. Dropping it
/// (the server stops accepting) ends the accept task, which closes the
/// listener.
pub struct TlsIncoming {
    rx: mpsc::Receiver<TlsStream<TcpStream>>,
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|stream| stream.map(Ok))
    }
}

/// Starts accepting on `listener` with `config`; `server` names the plane
/// in logs. The task ends when the returned stream is dropped (abort it to
/// be sure the listener is closed by a given moment).
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    server: &'static str,
) -> (TlsIncoming, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx, server));
    (TlsIncoming { rx }, task)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<TlsStream<TcpStream>>,
    server: &'static str,
) {
    // Dropped with the task: pending handshakes are aborted with it.
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    if handshakes.len() >= MAX_HANDSHAKES {
                        tracing::debug!(server, %peer, "too many tls handshakes in progress; connection closed");
                        continue;
                    }
                    let _ = tcp.set_nodelay(true);
                    handshakes.spawn(handshake(acceptor.clone(), tcp, peer, server));
                }
                Err(error) => {
                    // out of file descriptors and the like: back off, do not spin
                    tracing::warn!(server, %error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = handshakes.join_next() => {
                if let Ok(Some(stream)) = done
                    && tx.send(stream).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    server: &'static str,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(server, %peer, %error, "tls handshake failed (a plaintext client, or one that does not trust this certificate?)");
            None
        }
        Err(_) => {
            tracing::debug!(server, %peer, "tls handshake timed out");
            None
        }
    }
}
