//! The connection to the control plane: resolves `--server` / `--token`
//! against the environment, validates them, connects with a timeout, and
//! stamps every request with `authorization: Bearer <token>`.

use crate::args::{DEFAULT_SERVER, GlobalArgs, SERVER_ENV, TOKEN_ENV};
use crate::error::{self, CallContext, CliError, Subject};
use memtrace_common::config::Env;
use memtrace_proto::admin::v1::admin_token_service_client::AdminTokenServiceClient;
use memtrace_proto::admin::v1::api_key_service_client::ApiKeyServiceClient;
use memtrace_proto::admin::v1::arc_binding_service_client::ArcBindingServiceClient;
use memtrace_proto::admin::v1::audit_service_client::AuditServiceClient;
use memtrace_proto::admin::v1::config_service_client::ConfigServiceClient;
use memtrace_proto::admin::v1::master_key_service_client::MasterKeyServiceClient;
use memtrace_proto::admin::v1::org_service_client::OrgServiceClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// The control plane address and where it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub url: String,
    pub origin: &'static str,
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

    /// Checks the url and builds the endpoint. Errors name the flag or variable.
    pub fn endpoint(&self) -> Result<Endpoint, CliError> {
        let invalid = |why: &str| {
            CliError::new(format!("invalid {} {:?}: {why}", self.origin, self.url))
                .with_hint("expected a url like http://127.0.0.1:9200")
        };
        let parsed = url::Url::parse(&self.url).map_err(|err| invalid(&err.to_string()))?;
        match parsed.scheme() {
            "http" => {}
            "https" => {
                return Err(invalid("https is not supported by this build").with_hint(
                    "use http://, or put a tls-terminating proxy in front of memtracectl",
                ));
            }
            other => {
                return Err(invalid(&format!(
                    "unsupported scheme {other:?}, expected http"
                )));
            }
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("missing host"));
        }
        if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid("expected only scheme, host and port"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "credentials in the url are not supported; use --token",
            ));
        }
        Endpoint::from_shared(self.url.clone()).map_err(|err| invalid(&err.to_string()))
    }
}

/// `--token`, else the environment; `None` when neither is set.
pub fn resolve_token(global: &GlobalArgs, env: &Env) -> Option<String> {
    global
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .or_else(|| env.get(TOKEN_ENV).map(str::trim).filter(|t| !t.is_empty()))
        .map(str::to_owned)
}

fn bearer(token: &str) -> Result<AsciiMetadataValue, CliError> {
    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
        CliError::new("the admin token contains characters not allowed in a header")
            .with_hint("check --token or MEMTRACE_ADMIN_TOKEN for stray characters")
    })
}

/// A connected admin client.
pub struct Admin {
    channel: Channel,
    authorization: AsciiMetadataValue,
    ctx: CallContext,
}

impl Admin {
    /// Validates the settings and connects; fails fast when the server is unreachable.
    pub async fn connect(global: &GlobalArgs, env: &Env) -> Result<Self, CliError> {
        let token = resolve_token(global, env).ok_or_else(error::no_token)?;
        let authorization = bearer(&token)?;
        let server = Server::resolve(global, env);
        let timeout = global.timeout();
        let ctx = CallContext {
            server: server.url.clone(),
            timeout,
        };
        let endpoint = server
            .endpoint()?
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
            ctx,
        })
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

    fn global(args: &[&str]) -> GlobalArgs {
        let argv = ["memtracectl"]
            .into_iter()
            .chain(args.iter().copied())
            .chain(["org", "list"]);
        Cli::try_parse_from(argv).unwrap().global
    }

    #[test]
    fn flag_beats_environment_beats_default() {
        let env = Env::from_pairs([(SERVER_ENV, "http://env:1"), (TOKEN_ENV, "env-token")]);
        let flagged = global(&["--server", "http://flag:2", "--token", "flag-token"]);
        assert_eq!(Server::resolve(&flagged, &env).url, "http://flag:2");
        assert_eq!(resolve_token(&flagged, &env).as_deref(), Some("flag-token"));
        let bare = global(&[]);
        let from_env = Server::resolve(&bare, &env);
        assert_eq!(
            (from_env.url.as_str(), from_env.origin),
            ("http://env:1", SERVER_ENV)
        );
        assert_eq!(resolve_token(&bare, &env).as_deref(), Some("env-token"));
        let empty = Env::from_pairs([(TOKEN_ENV, "  ")]);
        assert_eq!(Server::resolve(&bare, &empty).url, DEFAULT_SERVER);
        assert_eq!(resolve_token(&bare, &empty), None);
    }

    #[test]
    fn invalid_server_urls_name_the_flag() {
        let env = Env::default();
        for bad in [
            "not a url",
            "127.0.0.1:9200",
            "ftp://cp:9200",
            "http://cp:9200/admin",
            "https://cp",
        ] {
            let server = Server::resolve(&global(&["--server", bad]), &env);
            let err = server.endpoint().unwrap_err();
            assert!(
                err.message().starts_with("invalid --server"),
                "{bad}: {err}"
            );
        }
        let env = Env::from_pairs([(SERVER_ENV, "nope")]);
        let err = Server::resolve(&global(&[]), &env).endpoint().unwrap_err();
        assert!(err.message().contains(SERVER_ENV), "{err}");
        for good in [
            "http://127.0.0.1:9200",
            "http://cp.internal:9200/",
            "http://[::1]:9200",
        ] {
            let server = Server::resolve(&global(&["--server", good]), &Env::default());
            assert!(server.endpoint().is_ok(), "{good}");
        }
    }

    #[tokio::test]
    async fn missing_token_fails_before_connecting() {
        let err = Admin::connect(&global(&[]), &Env::default())
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
        let err = Admin::connect(&args, &Env::default()).await.err().unwrap();
        assert!(
            err.message()
                .starts_with(&format!("cannot reach the control plane at {url}")),
            "{err}"
        );
        assert!(err.hint().unwrap().contains(SERVER_ENV));
    }
}
