//! A plane's server certificate: the PEM pair its settings name
//! ([`TlsFiles`]), loaded and checked once at start ([`ServerTls::load`]: a
//! bad pair refuses the start), handed to every new handshake by a resolver
//! whose pair can be swapped, and re-read while serving ([`ServerTls::watch`]:
//! every [`RELOAD_INTERVAL`] and at once on SIGHUP) so a renewed certificate
//! is served without a restart. A new pair that does not load is logged and
//! the current one kept; connections already open keep the pair they
//! started with.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

/// How often a serving plane re-reads its certificate and key files.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// ALPN protocols, in the server's order of preference: gRPC clients insist
/// on h2; the original SDKs over https speak HTTP/1.1.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One setting of a plane's section, shown as an operator writes it: the
/// file key and its environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub section: &'static str,
    pub key: &'static str,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} (MEMTRACE_{}_{})",
            self.section,
            self.key,
            self.section.to_ascii_uppercase(),
            self.key.to_ascii_uppercase()
        )
    }
}

/// Why a plane's certificate and key cannot be served. Every message names
/// the setting and the rule; none quotes the key file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{cert} and {key} go together: set both to serve TLS, or neither to serve plaintext")]
    HalfSet { cert: Setting, key: Setting },
    #[error("cannot read {setting} at {path}: {source}")]
    Read {
        setting: Setting,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting} at {path}: {rule}")]
    Pem {
        setting: Setting,
        path: PathBuf,
        rule: String,
    },
    #[error("{cert} and {key} are not one pair: {reason}")]
    Pair {
        cert: Setting,
        key: Setting,
        reason: String,
    },
    #[error("tls setup failed: {0}")]
    Setup(String),
}

/// The certificate and key files one plane serves TLS with, and the
/// settings that named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: Setting,
    pub key: Setting,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TlsFiles {
    /// The pair `[section] tls_cert_file` / `tls_key_file` name: `None` when
    /// both are empty (plaintext); one without the other is an error naming
    /// both, so a forgotten half never silently serves plaintext.
    pub fn from_settings(
        section: &'static str,
        cert_file: &str,
        key_file: &str,
    ) -> Result<Option<Self>, TlsError> {
        let cert = Setting {
            section,
            key: "tls_cert_file",
        };
        let key = Setting {
            section,
            key: "tls_key_file",
        };
        match (cert_file.trim(), key_file.trim()) {
            ("", "") => Ok(None),
            (c, k) if !c.is_empty() && !k.is_empty() => Ok(Some(Self {
                cert,
                key,
                cert_file: PathBuf::from(c),
                key_file: PathBuf::from(k),
            })),
            _ => Err(TlsError::HalfSet { cert, key }),
        }
    }

    /// Both files' bytes (the key's wiped when dropped).
    fn read(&self) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), TlsError> {
        let read = |setting: Setting, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                setting,
                path: path.to_owned(),
                source,
            })
        };
        Ok((
            read(self.cert, &self.cert_file)?,
            Zeroizing::new(read(self.key, &self.key_file)?),
        ))
    }

    /// The certificate chain and its key, checked to belong together.
    fn parse(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
        let pem = |setting: Setting, path: &Path, rule: String| TlsError::Pem {
            setting,
            path: path.to_owned(),
            rule,
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(self.cert, &self.cert_file, format!("not valid PEM: {e}")))?;
        if chain.is_empty() {
            return Err(pem(
                self.cert,
                &self.cert_file,
                "no CERTIFICATE block: expected the server certificate first, then any intermediates".into(),
            ));
        }
        // The parser's own message could quote bytes of the key: not shown.
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
            pem(
                self.key,
                &self.key_file,
                "no private key in PEM form (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                    .into(),
            )
        })?;
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Pair {
            cert: self.cert,
            key: self.key,
            reason: match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the private key does not match the certificate's public key".into()
                }
                other => other.to_string(),
            },
        })
    }
}

/// Both planes use ring, like every rustls client in the workspace; the
/// provider is passed explicitly so no process-global default is needed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 over both files: what the reload compares (a file rewritten
/// with the same bytes is no change; a touched-only file neither).
type Fingerprint = [u8; 32];

fn fingerprint(cert_pem: &[u8], key_pem: &[u8]) -> Fingerprint {
    let mut hash = Sha256::new();
    hash.update(cert_pem);
    hash.update(key_pem);
    hash.finalize().into()
}

/// Hands every new handshake the current pair; [`ServerTls`] swaps it.
struct SwappableCert(ArcSwap<CertifiedKey>);

impl fmt::Debug for SwappableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SwappableCert")
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// What the last look at the files found, so an unchanged pair is not
/// reloaded and the same failure not logged again every few seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Pair(Fingerprint),
    Unreadable(String),
}

/// What one look at the files did.
#[derive(Debug)]
pub enum Reload {
    /// Same bytes (or the same failure) as last time: nothing done.
    Unchanged,
    /// A new pair is served to new connections.
    Reloaded,
    /// The files changed but do not load; the current pair stays.
    Failed(TlsError),
}

/// A plane's TLS: the server configuration (ALPN h2 and HTTP/1.1, no
/// client certificates) and the pair it serves, which can be reloaded.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    current: Arc<SwappableCert>,
    config: Arc<rustls::ServerConfig>,
    seen: Arc<std::sync::Mutex<Seen>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads and checks the pair: unreadable files, no certificate, no key
    /// or a key that is not the certificate's are errors naming the setting.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let (cert_pem, key_pem) = files.read()?;
        let pair = files.parse(&cert_pem, &key_pem)?;
        let current = Arc::new(SwappableCert(ArcSwap::from_pointee(pair)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            seen: Arc::new(std::sync::Mutex::new(Seen::Pair(fingerprint(
                &cert_pem, &key_pem,
            )))),
            files,
            current,
            config: Arc::new(config),
        })
    }

    /// The files served, for logs.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The rustls configuration every handshake uses (it asks the
    /// swappable resolver for the pair, so it never needs rebuilding).
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// The end-entity certificate served to new connections now.
    pub fn current_certificate(&self) -> Option<CertificateDer<'static>> {
        self.current.0.load().cert.first().cloned()
    }

    /// Looks at the files once: a changed pair that loads is swapped in;
    /// `force` (SIGHUP) reloads even when the bytes look unchanged.
    pub fn reload(&self, force: bool) -> Reload {
        let read = self.files.read();
        let now = match &read {
            Ok((cert, key)) => Seen::Pair(fingerprint(cert, key)),
            Err(error) => Seen::Unreadable(error.to_string()),
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now && !force {
                return Reload::Unchanged;
            }
            *seen = now;
        }
        let (cert, key) = match read {
            Ok(pair) => pair,
            Err(error) => return Reload::Failed(error),
        };
        match self.files.parse(&cert, &key) {
            Ok(pair) => {
                self.current.0.store(Arc::new(pair));
                Reload::Reloaded
            }
            Err(error) => Reload::Failed(error),
        }
    }

    /// Reloads every `interval` and on SIGHUP until `stop`, logging what
    /// changed (`server` names the plane).
    pub async fn watch(self, server: &'static str, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut hangup = hangup();
        loop {
            let trigger = tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => "poll",
                () = next_hangup(&mut hangup) => "SIGHUP",
            };
            let cert_file = self.files.cert_file.display();
            match self.reload(trigger == "SIGHUP") {
                Reload::Unchanged => {}
                Reload::Reloaded => tracing::info!(
                    server,
                    trigger,
                    %cert_file,
                    "tls certificate reloaded; new connections are served the new one"
                ),
                Reload::Failed(error) => tracing::warn!(
                    server,
                    trigger,
                    %error,
                    "tls certificate not reloaded; still serving the previous one"
                ),
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

/// SIGHUP, when this platform has it and the handler can be installed.
fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; tls files are still re-read every few seconds");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

async fn next_hangup(hangup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(signal) = hangup
        && signal.recv().await.is_some()
    {
        return;
    }
    #[cfg(not(unix))]
    let _ = hangup;
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests;
