//! `memtracectl` against an in-process stand-in of the control plane's admin
//! API: the token travels as `authorization: Bearer`, results are rendered
//! from real gRPC answers, statuses become `error:` + `hint:` lines, and the
//! binary keeps stdout for the result only.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use clap::Parser;
use memtrace_cli::args::Cli;
use memtrace_common::config::Env;
use memtrace_proto::admin::v1 as pb;
use pb::api_key_service_server::{ApiKeyService, ApiKeyServiceServer};
use pb::org_service_server::{OrgService, OrgServiceServer};
use prost_types::Timestamp;
use std::sync::{Arc, Mutex};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

const TOKEN: &str = "mta_test_token_0123456789abcdef0123456789";

#[derive(Default)]
struct Seen {
    authorizations: Vec<String>,
    create_key: Option<pb::CreateApiKeyRequest>,
    create_token: Option<pb::CreateTokenRequest>,
}

#[derive(Clone, Default)]
struct Mock {
    seen: Arc<Mutex<Seen>>,
}

impl Mock {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.seen.lock().unwrap().authorizations.push(auth.clone());
        if auth == format!("Bearer {TOKEN}") {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid admin token"))
        }
    }
}

fn org(id: &str, name: &str) -> pb::Org {
    pb::Org {
        id: id.into(),
        name: name.into(),
        created_at: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        has_arc_binding: true,
        active_api_keys: 2,
    }
}

#[tonic::async_trait]
impl OrgService for Mock {
    async fn create_org(
        &self,
        request: Request<pb::CreateOrgRequest>,
    ) -> Result<Response<pb::Org>, Status> {
        self.check(&request)?;
        Ok(Response::new(org("org_new", &request.into_inner().name)))
    }

    async fn list_orgs(
        &self,
        request: Request<pb::ListOrgsRequest>,
    ) -> Result<Response<pb::ListOrgsResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(pb::ListOrgsResponse {
            orgs: vec![org("org_1", "acme"), org("org_2", "globex")],
        }))
    }

    async fn get_org(
        &self,
        request: Request<pb::GetOrgRequest>,
    ) -> Result<Response<pb::Org>, Status> {
        self.check(&request)?;
        let id = request.into_inner().org_id;
        match id.as_str() {
            "org_1" => Ok(Response::new(org("org_1", "acme"))),
            _ => Err(Status::not_found(format!("org {id} not found"))),
        }
    }

    async fn delete_org(
        &self,
        request: Request<pb::DeleteOrgRequest>,
    ) -> Result<Response<pb::DeleteOrgResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(pb::DeleteOrgResponse {
            org_id: request.into_inner().org_id,
            arc_binding_removed: false,
            api_keys_removed: 1,
        }))
    }

    async fn record_legacy_import(
        &self,
        request: Request<pb::RecordLegacyImportRequest>,
    ) -> Result<Response<pb::RecordLegacyImportResponse>, Status> {
        self.check(&request)?;
        Err(Status::unimplemented("not used by these tests"))
    }
}

#[tonic::async_trait]
impl ApiKeyService for Mock {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        self.check(&request)?;
        let request = request.into_inner();
        self.seen.lock().unwrap().create_key = Some(request.clone());
        let scopes = if request.scopes.is_empty() {
            vec!["read".into(), "write".into()]
        } else {
            request.scopes
        };
        let expires_at = (request.expires_in_seconds > 0).then(|| Timestamp {
            seconds: 1_700_000_000 + request.expires_in_seconds as i64,
            nanos: 0,
        });
        Ok(Response::new(pb::CreateApiKeyResponse {
            key: Some(pb::ApiKey {
                id: "key_0011223344556677".into(),
                org_id: request.org_id,
                name: request.name,
                scopes,
                created_at: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                expires_at,
                last_used_at: None,
                revoked_at: None,
                legacy: false,
            }),
            secret: "mtk_the_secret".into(),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        self.check(&request)?;
        Ok(Response::new(pb::ListApiKeysResponse { keys: vec![] }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        self.check(&request)?;
        Err(Status::not_found(format!(
            "api key {} not found",
            request.into_inner().key_id
        )))
    }

    async fn import_legacy_api_key(
        &self,
        request: Request<pb::ImportLegacyApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        self.check(&request)?;
        Err(Status::unimplemented("not used by these tests"))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        self.check(&request)?;
        let request = request.into_inner();
        self.seen.lock().unwrap().create_token = Some(request.clone());
        Ok(Response::new(pb::CreateTokenResponse {
            token: "v4.public.the_token".into(),
            token_id: "tok_0011".into(),
            org_id: request.org_id,
            agent_id: request.agent_id,
            scopes: request.scopes,
            issued_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            expires_at: Some(Timestamp {
                seconds: 1_700_003_600,
                nanos: 0,
            }),
            key_id: "tk_1".into(),
        }))
    }
}

/// Serves the mock on 127.0.0.1:0 and returns its url.
async fn serve(mock: Mock) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OrgServiceServer::new(mock.clone()))
            .add_service(ApiKeyServiceServer::new(mock))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    url
}

struct Run {
    result: anyhow::Result<()>,
    out: String,
    err: String,
}

async fn run(url: &str, token: &str, args: &[&str]) -> Run {
    let argv = ["memtracectl", "--server", url]
        .into_iter()
        .chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv).unwrap();
    let env = Env::from_pairs([("MEMTRACE_ADMIN_TOKEN", token)]);
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    let result = memtrace_cli::run(cli, &env, &mut out, &mut diag).await;
    if let Err(err) = &result {
        memtrace_cli::report(err, &mut diag);
    }
    Run {
        result,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(diag).unwrap(),
    }
}

fn json(run: &Run) -> serde_json::Value {
    assert!(run.result.is_ok(), "{}", run.err);
    serde_json::from_str(&run.out).unwrap()
}

#[tokio::test]
async fn org_list_sends_the_token_and_renders_json_and_table() {
    let mock = Mock::default();
    let url = serve(mock.clone()).await;
    let listed = json(&run(&url, TOKEN, &["org", "list", "-o", "json"]).await);
    assert_eq!(
        listed["orgs"][0],
        serde_json::json!({
            "id": "org_1",
            "name": "acme",
            "created_at": "2023-11-14T22:13:20Z",
            "has_arc_binding": true,
            "active_api_keys": 2
        })
    );
    assert_eq!(listed["orgs"].as_array().unwrap().len(), 2);
    assert_eq!(
        mock.seen.lock().unwrap().authorizations,
        [format!("Bearer {TOKEN}")]
    );

    let table = run(&url, TOKEN, &["org", "list"]).await;
    let lines: Vec<&str> = table.out.lines().collect();
    assert!(lines[0].starts_with("ID"), "{}", table.out);
    assert!(lines[1].starts_with("org_1") && lines[1].contains("acme"));

    let created = json(&run(&url, TOKEN, &["org", "create", "initech", "-o", "json"]).await);
    assert_eq!(
        created,
        serde_json::json!({"id": "org_new", "name": "initech", "created_at": "2023-11-14T22:13:20Z"})
    );
}

#[tokio::test]
async fn key_create_passes_scopes_and_expiry_and_shows_the_secret() {
    let mock = Mock::default();
    let url = serve(mock.clone()).await;
    let args = [
        "key",
        "create",
        "--org",
        "org_1",
        "--name",
        "agent",
        "--permissions",
        "read",
        "--expires-in",
        "30d",
        "-o",
        "json",
    ];
    let created = json(&run(&url, TOKEN, &args).await);
    let sent = mock.seen.lock().unwrap().create_key.clone().unwrap();
    assert_eq!(sent.scopes, ["read"]);
    assert_eq!(sent.expires_in_seconds, 2_592_000);
    assert_eq!(created["key"], "mtk_the_secret");
    assert_eq!(created["id"], "key_0011223344556677");
    assert_eq!(created["scopes"], serde_json::json!(["read"]));
    assert_eq!(created["expires_at"], "2023-12-14T22:13:20Z");

    let table = run(
        &url,
        TOKEN,
        &["key", "create", "--org", "org_1", "--name", "a"],
    )
    .await;
    assert!(table.out.contains("mtk_the_secret") && table.out.contains("shown only once"));
    let sent = mock.seen.lock().unwrap().create_key.clone().unwrap();
    assert!(sent.scopes.is_empty());
    assert_eq!(sent.expires_in_seconds, 0);
}

#[tokio::test]
async fn token_create_passes_agent_scopes_and_ttl_and_shows_the_token_once() {
    let mock = Mock::default();
    let url = serve(mock.clone()).await;
    let args = [
        "token", "create", "--org", "org_1", "--agent", "planner", "--scopes", "write", "--ttl",
        "1h", "-o", "json",
    ];
    let created = json(&run(&url, TOKEN, &args).await);
    let sent = mock.seen.lock().unwrap().create_token.clone().unwrap();
    assert_eq!(sent.org_id, "org_1");
    assert_eq!(sent.agent_id, "planner");
    assert_eq!(sent.scopes, ["write"]);
    assert_eq!(sent.ttl_seconds, 3600);
    assert_eq!(created["token"], "v4.public.the_token");
    assert_eq!(created["agent_id"], "planner");
    assert_eq!(created["expires_at"], "2023-11-14T23:13:20Z");

    let table = run(&url, TOKEN, &["token", "create", "--org", "org_1"]).await;
    assert_eq!(table.out.matches("v4.public.the_token").count(), 1);
    assert!(table.out.contains("shown only once"));
    let sent = mock.seen.lock().unwrap().create_token.clone().unwrap();
    assert!(sent.agent_id.is_empty() && sent.scopes.is_empty());
    assert_eq!(sent.ttl_seconds, 0, "the server's default");
}

#[tokio::test]
async fn statuses_become_errors_with_hints() {
    let url = serve(Mock::default()).await;

    let missing = run(&url, TOKEN, &["org", "get", "org_9"]).await;
    assert!(missing.result.is_err() && missing.out.is_empty());
    assert_eq!(
        missing.err,
        "error: org org_9 not found\n  hint: run 'memtracectl org list' to see org ids\n"
    );

    let revoke = run(&url, TOKEN, &["key", "revoke", "key_9"]).await;
    assert!(
        revoke
            .err
            .contains("hint: run 'memtracectl key list --org ORG_ID'")
    );

    let denied = run(&url, "wrong", &["org", "list"]).await;
    assert!(
        denied
            .err
            .starts_with("error: invalid admin token\n  hint:")
    );
    assert!(denied.err.contains("MEMTRACE_ADMIN_TOKEN"));

    let unimplemented = run(&url, TOKEN, &["master-key", "status"]).await;
    assert!(
        unimplemented.err.contains("does not implement this call"),
        "{}",
        unimplemented.err
    );
}

#[tokio::test]
async fn the_binary_keeps_stdout_for_the_result() {
    let url = serve(Mock::default()).await;
    let bin = env!("CARGO_BIN_EXE_memtracectl");

    let ok = tokio::process::Command::new(bin)
        .args(["org", "list", "--output", "json", "--server", &url])
        .env("MEMTRACE_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(doc["orgs"][1]["name"], "globex");
    assert!(ok.stderr.is_empty());

    let failed = tokio::process::Command::new(bin)
        .args(["org", "get", "org_9", "--server", &url])
        .env("MEMTRACE_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(failed.stdout.is_empty());
    let stderr = String::from_utf8(failed.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 2, "{stderr}");

    let usage = tokio::process::Command::new(bin)
        .args(["org", "frobnicate"])
        .output()
        .await
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));

    let no_token = tokio::process::Command::new(bin)
        .args(["org", "list", "--server", &url])
        .env_remove("MEMTRACE_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(no_token.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&no_token.stderr).starts_with("error: no admin token\n  hint: ")
    );
}
