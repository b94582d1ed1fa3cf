//! The connection to the control plane: resolves `--server`, `--ca-file`
//! and the admin token (`--token`, `--token-file`) against the environment,
//! validates them, connects with a timeout (over TLS for `https://`), and
//! stamps every request with `authorization: Bearer <token>`.

use crate::args::{CA_FILE_ENV, DEFAULT_SERVER, GlobalArgs, SERVER_ENV, TOKEN_ENV};
use crate::error::{self, CallContext, CliError, Subject};
use crate::secret;
use memtrace_common::config::Env;
use memtrace_proto::admin::v1::admin_token_service_client::AdminTokenServiceClient;
use memtrace_proto::admin::v1::api_key_service_client::ApiKeyServiceClient;
use memtrace_proto::admin::v1::arc_binding_service_client::ArcBindingServiceClient;
use memtrace_proto::admin::v1::audit_service_client::AuditServiceClient;
use memtrace_proto::admin::v1::config_service_client::ConfigServiceClient;
use memtrace_proto::admin::v1::master_key_service_client::MasterKeyServiceClient;
use memtrace_proto::admin::v1::org_service_client::OrgServiceClient;
use std::io::Read;
use std::path::PathBuf;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};
use zeroize::Zeroizing;

/// The control plane address and where it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub url: String,
    pub origin: &'static str,
}

/// The CA an `https://` control plane's certificate is checked against, and
/// where it came from; without one, the system's CAs are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    pub path: PathBuf,
    pub origin: &'static str,
}

impl CaFile {
    /// `--ca-file`, else the environment.
    pub fn resolve(global: &GlobalArgs, env: &Env) -> Option<Self> {
        if let Some(path) = global
            .ca_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            return Some(Self {
                path: path.clone(),
                origin: "--ca-file",
            });
        }
        env.get(CA_FILE_ENV)
            .map(str::trim)
            .filter(|path| !path.is_empty())
            .map(|path| Self {
                path: PathBuf::from(path),
                origin: CA_FILE_ENV,
            })
    }

    /// Only this CA is trusted (not the system's as well): a private CA is
    /// meant to be the only one that can vouch for the control plane.
    fn tls_config(&self) -> Result<ClientTlsConfig, CliError> {
        let invalid = |why: String| {
            CliError::new(format!(
                "invalid {} {}: {why}",
                self.origin,
                self.path.display()
            ))
            .with_hint(
                "expected the PEM file of the CA that signed the control plane's certificate",
            )
        };
        let pem = std::fs::read(&self.path).map_err(|e| invalid(format!("cannot read it: {e}")))?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(invalid(
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
            ));
        }
        Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
    }
}

impl Server {
    /// `--server`, else the environment, else the default.
    pub fn resolve(global: &GlobalArgs, env: &Env) -> Self {
        if let Some(url) = global
            .server
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            return Self {
                url: url.to_owned(),
                origin: "--server",
            };
        }
        match env.get(SERVER_ENV).map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => Self {
                url: url.to_owned(),
                origin: SERVER_ENV,
            },
            None => Self {
                url: DEFAULT_SERVER.to_owned(),
                origin: "the default server",
            },
        }
    }

    /// Checks the url and builds the endpoint: TLS for `https://`, trusting
    /// `ca` (or the system's CAs). Errors name the flag or variable.
    pub fn endpoint(&self, ca: Option<&CaFile>) -> Result<Endpoint, CliError> {
        let invalid = |why: &str| {
            CliError::new(format!("invalid {} {:?}: {why}", self.origin, self.url))
                .with_hint("expected a url like http://127.0.0.1:9200 or https://cp.internal:9200")
        };
        let parsed = url::Url::parse(&self.url).map_err(|err| invalid(&err.to_string()))?;
        let https = match parsed.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(invalid(&format!(
                    "unsupported scheme {other:?}, expected http or https"
                )));
            }
        };
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("missing host"));
        }
        if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid("expected only scheme, host and port"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "credentials in the url are not supported; use --token-file or MEMTRACE_ADMIN_TOKEN",
            ));
        }
        if let (false, Some(ca)) = (https, ca) {
            return Err(CliError::new(format!(
                "{} is set but {} {:?} is plaintext http://",
                ca.origin, self.origin, self.url
            ))
            .with_hint(format!(
                "use an https:// url for a control plane that serves TLS, or unset {}",
                ca.origin
            )));
        }
        let endpoint =
            Endpoint::from_shared(self.url.clone()).map_err(|err| invalid(&err.to_string()))?;
        if !https {
            return Ok(endpoint);
        }
        let tls = match ca {
            Some(ca) => ca.tls_config()?,
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint.tls_config(tls).map_err(|err| {
            CliError::new(format!(
                "cannot set up tls for {} {:?}: {}",
                self.origin,
                self.url,
                error::one_line(&err.to_string())
            ))
            .with_hint(format!(
                "pass the CA that signed the control plane's certificate with --ca-file or {CA_FILE_ENV}"
            ))
        })
    }
}

/// Where the admin token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Flag,
    File,
    Stdin,
    Env,
}

/// `--token`, else `--token-file` (`-`: `stdin`), else the environment;
/// `None` when none is set.
pub fn resolve_token(
    global: &GlobalArgs,
    env: &Env,
    stdin: &mut dyn Read,
) -> Result<Option<(Zeroizing<String>, TokenSource)>, CliError> {
    let trimmed = |t: &str| Some(t.trim()).filter(|t| !t.is_empty()).map(str::to_owned);
    if let Some(token) = global.token.as_deref().and_then(trimmed) {
        return Ok(Some((Zeroizing::new(token), TokenSource::Flag)));
    }
    if let Some(path) = &global.token_file {
        let token = secret::read("--token-file", path, stdin)?;
        let source = if secret::is_stdin(path) {
            TokenSource::Stdin
        } else {
            TokenSource::File
        };
        return Ok(Some((Zeroizing::new(token.trim().to_owned()), source)));
    }
    Ok(env
        .get(TOKEN_ENV)
        .and_then(trimmed)
        .map(|t| (Zeroizing::new(t), TokenSource::Env)))
}

fn bearer(token: &str) -> Result<AsciiMetadataValue, CliError> {
    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
        CliError::new("the admin token contains characters not allowed in a header").with_hint(
            "check the admin token (--token-file, MEMTRACE_ADMIN_TOKEN or --token) for stray characters",
        )
    })
}

/// A connected admin client.
pub struct Admin {
    channel: Channel,
    authorization: AsciiMetadataValue,
    token_source: TokenSource,
    ctx: CallContext,
}

impl Admin {
    /// Validates the settings and connects; fails fast when the server is
    /// unreachable. `stdin` is read for `--token-file -`.
    pub async fn connect(
        global: &GlobalArgs,
        env: &Env,
        stdin: &mut (dyn Read + Send),
    ) -> Result<Self, CliError> {
        let (token, token_source) =
            resolve_token(global, env, stdin)?.ok_or_else(error::no_token)?;
        let authorization = bearer(&token)?;
        let server = Server::resolve(global, env);
        let ca = CaFile::resolve(global, env);
        let timeout = global.timeout();
        let ctx = CallContext {
            server: server.url.clone(),
            timeout,
            ca_origin: ca.as_ref().map(|ca| ca.origin),
        };
        let endpoint = server
            .endpoint(ca.as_ref())?
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("memtracectl/", env!("CARGO_PKG_VERSION")))
            .map_err(|err| CliError::new(format!("invalid user agent: {err}")))?;
        // The connect timeout bounds the TCP handshake; this bounds the whole
        // attempt (including the HTTP/2 handshake with a silent peer).
        let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(err)) => return Err(error::from_connect(&err, &ctx)),
            Err(_) => {
                return Err(CliError::new(format!(
                    "cannot reach the control plane at {} (no answer within {}s)",
                    ctx.server,
                    timeout.as_secs()
                ))
                .with_hint(format!(
                    "is memtrace-control-plane running? set --server or {SERVER_ENV}"
                )));
            }
        };
        Ok(Self {
            channel,
            authorization,
            token_source,
            ctx,
        })
    }

    /// Whether the admin token was read from stdin (`--token-file -`), so
    /// another secret cannot be.
    pub fn token_read_stdin(&self) -> bool {
        self.token_source == TokenSource::Stdin
    }

    /// A request carrying the admin token.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    /// Maps a failed call; `subject` picks the not-found hint.
    pub fn fail(&self, status: Status, subject: Subject) -> anyhow::Error {
        error::from_status(&status, &self.ctx, subject).into()
    }

    pub fn orgs(&self) -> OrgServiceClient<Channel> {
        OrgServiceClient::new(self.channel.clone())
    }

    pub fn arc_bindings(&self) -> ArcBindingServiceClient<Channel> {
        ArcBindingServiceClient::new(self.channel.clone())
    }

    pub fn api_keys(&self) -> ApiKeyServiceClient<Channel> {
        ApiKeyServiceClient::new(self.channel.clone())
    }

    pub fn admin_tokens(&self) -> AdminTokenServiceClient<Channel> {
        AdminTokenServiceClient::new(self.channel.clone())
    }

    pub fn master_keys(&self) -> MasterKeyServiceClient<Channel> {
        MasterKeyServiceClient::new(self.channel.clone())
    }

    pub fn config(&self) -> ConfigServiceClient<Channel> {
        ConfigServiceClient::new(self.channel.clone())
    }

    pub fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel.clone())
    }

    pub fn erasures(
        &self,
    ) -> memtrace_proto::admin::v1::erasure_service_client::ErasureServiceClient<Channel> {
        memtrace_proto::admin::v1::erasure_service_client::ErasureServiceClient::new(
            self.channel.clone(),
        )
    }

    pub fn cluster(
        &self,
    ) -> memtrace_proto::admin::v1::cluster_service_client::ClusterServiceClient<Channel> {
        memtrace_proto::admin::v1::cluster_service_client::ClusterServiceClient::new(
            self.channel.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::Parser;
    use std::io::Cursor;

    fn global(args: &[&str]) -> GlobalArgs {
        let argv = ["memtracectl"]
            .into_iter()
            .chain(args.iter().copied())
            .chain(["org", "list"]);
        Cli::try_parse_from(argv).unwrap().global
    }

    fn token(global: &GlobalArgs, env: &Env, stdin: &str) -> Option<(String, TokenSource)> {
        let mut stdin = Cursor::new(stdin.as_bytes().to_vec());
        resolve_token(global, env, &mut stdin)
            .unwrap()
            .map(|(token, source)| (token.to_string(), source))
    }

    #[test]
    fn flag_beats_environment_beats_default() {
        let env = Env::from_pairs([(SERVER_ENV, "http://env:1"), (TOKEN_ENV, "env-token")]);
        let flagged = global(&["--server", "http://flag:2", "--token", "flag-token"]);
        assert_eq!(Server::resolve(&flagged, &env).url, "http://flag:2");
        assert_eq!(
            token(&flagged, &env, ""),
            Some(("flag-token".into(), TokenSource::Flag))
        );
        let bare = global(&[]);
        let from_env = Server::resolve(&bare, &env);
        assert_eq!(
            (from_env.url.as_str(), from_env.origin),
            ("http://env:1", SERVER_ENV)
        );
        assert_eq!(
            token(&bare, &env, ""),
            Some(("env-token".into(), TokenSource::Env))
        );
        let empty = Env::from_pairs([(TOKEN_ENV, "  ")]);
        assert_eq!(Server::resolve(&bare, &empty).url, DEFAULT_SERVER);
        assert_eq!(token(&bare, &empty, ""), None);
    }

    #[test]
    fn the_token_file_beats_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "file-token\n").unwrap();
        let env = Env::from_pairs([(TOKEN_ENV, "env-token")]);
        let from_file = global(&["--token-file", file.to_str().unwrap()]);
        assert_eq!(
            token(&from_file, &env, ""),
            Some(("file-token".into(), TokenSource::File))
        );
        let from_stdin = global(&["--token-file", "-"]);
        assert_eq!(
            token(&from_stdin, &env, "stdin-token\n"),
            Some(("stdin-token".into(), TokenSource::Stdin))
        );
        let both = [
            "memtracectl",
            "--token",
            "t",
            "--token-file",
            "-",
            "org",
            "list",
        ];
        assert!(
            Cli::try_parse_from(both).is_err(),
            "one source of the token"
        );
        let mut empty = Cursor::new(Vec::new());
        let err = resolve_token(&from_stdin, &env, &mut empty).unwrap_err();
        assert!(
            err.message().starts_with("--token-file stdin: empty"),
            "{err}"
        );
    }

    #[test]
    fn invalid_server_urls_name_the_flag() {
        let env = Env::default();
        for bad in [
            "not a url",
            "127.0.0.1:9200",
            "ftp://cp:9200",
            "http://cp:9200/admin",
            "https://user:pw@cp:9200",
        ] {
            let server = Server::resolve(&global(&["--server", bad]), &env);
            let err = server.endpoint(None).unwrap_err();
            assert!(
                err.message().starts_with("invalid --server"),
                "{bad}: {err}"
            );
        }
        let env = Env::from_pairs([(SERVER_ENV, "nope")]);
        let err = Server::resolve(&global(&[]), &env)
            .endpoint(None)
            .unwrap_err();
        assert!(err.message().contains(SERVER_ENV), "{err}");
        for good in [
            "http://127.0.0.1:9200",
            "http://cp.internal:9200/",
            "http://[::1]:9200",
        ] {
            let server = Server::resolve(&global(&["--server", good]), &Env::default());
            assert!(server.endpoint(None).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_ca_file_needs_https_and_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let path = not_pem.to_str().unwrap();

        let plain = global(&["--server", "http://cp:9200", "--ca-file", path]);
        let ca = CaFile::resolve(&plain, &Env::default()).unwrap();
        let err = Server::resolve(&plain, &Env::default())
            .endpoint(Some(&ca))
            .unwrap_err();
        assert!(
            err.message().starts_with("--ca-file is set but --server")
                && err.message().contains("plaintext http://"),
            "{err}"
        );

        let env = Env::from_pairs([(CA_FILE_ENV, path)]);
        let tls = global(&["--server", "https://cp:9200"]);
        let ca = CaFile::resolve(&tls, &env).unwrap();
        assert_eq!(ca.origin, CA_FILE_ENV);
        let err = Server::resolve(&tls, &env).endpoint(Some(&ca)).unwrap_err();
        assert!(
            err.message()
                .starts_with(&format!("invalid {CA_FILE_ENV} {path}: no PEM certificate")),
            "{err}"
        );
        let missing = dir.path().join("missing.pem");
        let ca = CaFile {
            path: missing,
            origin: "--ca-file",
        };
        let err = Server::resolve(&tls, &env).endpoint(Some(&ca)).unwrap_err();
        assert!(err.message().contains("cannot read it"), "{err}");
    }

    #[tokio::test]
    async fn missing_token_fails_before_connecting() {
        let err = Admin::connect(&global(&[]), &Env::default(), &mut std::io::empty())
            .await
            .err()
            .unwrap();
        assert_eq!(err.message(), "no admin token");
        assert!(
            err.hint()
                .unwrap()
                .contains("MEMTRACE_BOOTSTRAP_ADMIN_TOKEN")
        );
    }

    #[tokio::test]
    async fn unreachable_server_fails_fast_with_the_address() {
        // Bind then drop a listener so the port is (very likely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let args = global(&["--server", &url, "--token", "t", "--timeout", "2"]);
        let err = Admin::connect(&args, &Env::default(), &mut std::io::empty())
            .await
            .err()
            .unwrap();
        assert!(
            err.message()
                .starts_with(&format!("cannot reach the control plane at {url}")),
            "{err}"
        );
        assert!(err.hint().unwrap().contains(SERVER_ENV));
    }
}
