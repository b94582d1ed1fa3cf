//! The first-start demo of `memtracectl dev`: once the control plane is
//! ready, create the `demo` org and one api key through the admin API (as
//! `memtracectl` would), mark it in the data directory so the key is printed
//! exactly once, and compose the banner with working curl and Python examples.

use super::DevError;
use super::keys::{DevKeys, write_marker};
use crate::args::{GlobalArgs, OutputFormat};
use crate::client::Admin;
use memtrace_common::config::Env;
use memtrace_proto::admin::v1 as pb;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;
use zeroize::Zeroizing;

/// Marks that the demo org and its key were created (and the key shown).
pub const DEMO_MARKER: &str = "dev-demo.json";
const DEMO_ORG: &str = "demo";
/// How long to wait for the control plane to open its admin API.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// What the banner needs.
pub struct Demo<'a> {
    pub data_dir: &'a Path,
    pub control_plane: SocketAddr,
    pub worker: SocketAddr,
    pub keys: &'a DevKeys,
}

/// The demo org and, on first start only, its api key.
struct Outcome {
    org_id: String,
    key: Option<Zeroizing<String>>,
}

impl Demo<'_> {
    /// Creates the demo org and key on first start; returns the banner once
    /// the control plane answers admin calls (on every start, so the
    /// `memtracectl` commands the banner suggests work when it appears).
    pub async fn ensure(self) -> Result<Zeroizing<String>, DevError> {
        let marker = self.data_dir.join(DEMO_MARKER);
        let admin = self.admin().await?;
        let outcome = if marker.exists() {
            let text = std::fs::read_to_string(&marker).map_err(|cause| DevError::Io {
                path: marker.clone(),
                cause,
            })?;
            let org_id = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["org_id"].as_str().map(str::to_owned))
                .ok_or_else(|| {
                    DevError::Demo(format!(
                        "{} has no org_id; delete it to create the demo org again",
                        marker.display()
                    ))
                })?;
            Outcome { org_id, key: None }
        } else {
            let org_id = create_demo_org(&admin).await?;
            let created = call(
                admin
                    .api_keys()
                    .create_api_key(admin.request(pb::CreateApiKeyRequest {
                        org_id: org_id.clone(),
                        name: "demo".into(),
                        scopes: vec!["read".into(), "write".into()],
                        expires_in_seconds: 0,
                    })),
                "create the demo api key",
            )
            .await?;
            let key_id = created.key.map(|k| k.id).unwrap_or_default();
            let record = serde_json::json!({
                "org_id": org_id,
                "org_name": DEMO_ORG,
                "api_key_id": key_id,
                "note": "the demo api key was printed once by `memtracectl dev` and is not stored",
            });
            write_marker(&marker, record.to_string().as_bytes())?;
            tracing::info!(org_id = %org_id, key_id = %key_id, "demo org and api key created");
            Outcome {
                org_id,
                key: Some(Zeroizing::new(created.secret)),
            }
        };
        Ok(self.banner(&outcome))
    }

    /// Connects as the dev admin, waiting while the control plane starts.
    async fn admin(&self) -> Result<Admin, DevError> {
        let global = GlobalArgs {
            server: Some(format!("http://{}", self.control_plane)),
            ca_file: None,
            token: Some(self.keys.admin_token.to_string()),
            token_file: None,
            output: OutputFormat::Table,
            timeout: 10,
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let attempt = match Admin::connect(&global, &Env::default(), &mut std::io::empty())
                .await
            {
                Ok(admin) => match admin
                    .orgs()
                    .list_orgs(admin.request(pb::ListOrgsRequest {}))
                    .await
                {
                    Ok(_) => return Ok(admin),
                    // the gate is closed (or the token not yet loaded) until startup finishes
                    Err(status)
                        if matches!(status.code(), Code::Unavailable | Code::Unauthenticated) =>
                    {
                        status.message().to_owned()
                    }
                    Err(status) => return Err(status_error("list orgs", &status)),
                },
                Err(error) => error.to_string(),
            };
            if Instant::now() > deadline {
                return Err(DevError::Demo(format!(
                    "the control plane did not become ready within {}s: {attempt}",
                    READY_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn banner(&self, outcome: &Outcome) -> Zeroizing<String> {
        let keys_file = self.keys.keys_file.display();
        let token_file = self.keys.admin_token_file.display();
        let port = self.worker.port();
        let cp = self.control_plane;
        let org = &outcome.org_id;
        let rule = "=".repeat(72);
        // this very binary: scripts/dev.sh runs target/debug/memtracectl, which is not on PATH
        let ctl = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "memtracectl".into());
        // One buffer, sized for the whole banner up front and written in
        // place: the key is never copied into a temporary, and the buffer
        // never reallocates (which would leave a copy behind, unzeroised).
        let mut text = Zeroizing::new(String::with_capacity(BANNER_CAPACITY));
        let _ = write!(
            text,
            "\n{rule}\nmemtrace dev: control plane http://{cp}, worker http://localhost:{port}\n\
             DEVELOPMENT ONLY: the master and fleet keys are in {keys_file}\n\n\
             admin (memtracectl):\n  \
             export MEMTRACE_CONTROL_PLANE_URL=http://{cp}\n  \
             export MEMTRACE_ADMIN_TOKEN=$(cat {token_file})\n  \
             {ctl} org list\n\n"
        );
        // The key appears exactly once (in the export line); the examples
        // refer to it as $KEY.
        let quoted = match &outcome.key {
            Some(key) => {
                let _ = write!(
                    text,
                    "demo org {org}: api key (shown once, save it now):\n\n  export KEY={}\n\n",
                    key.as_str()
                );
                "\"x-api-key: $KEY\""
            }
            None => {
                let _ = write!(
                    text,
                    "demo org {org}: its api key was shown on the first start only.\n\
                     make another with: {ctl} key create --org {org} --name demo2\n\n"
                );
                "'x-api-key: mtk_...'"
            }
        };
        let _ = write!(
            text,
            "  curl -H {quoted} -H 'content-type: application/json' -X POST localhost:{port}/api/v1/memories -d '{{\"agent_id\":\"demo\",\"content\":\"hello\"}}'\n  \
             curl -H {quoted} 'localhost:{port}/api/v1/memories?agent_id=demo'\n\n\
             python (pip install memtrace-sdk):\n  \
             import os\n  \
             from memtrace import Memtrace\n  \
             client = Memtrace(\"http://localhost:{port}\", os.environ[\"KEY\"])\n  \
             client.remember(\"demo\", \"hello\")\n  \
             print(client.recall(\"demo\"))\n{rule}\n"
        );
        text
    }
}

/// Room for the whole dev banner (about 1.5 KiB; paths may be long).
const BANNER_CAPACITY: usize = 16 * 1024;

/// Creates the `demo` org, or finds it when an earlier start created it but
/// stopped before writing the marker.
async fn create_demo_org(admin: &Admin) -> Result<String, DevError> {
    match admin
        .orgs()
        .create_org(admin.request(pb::CreateOrgRequest {
            name: DEMO_ORG.into(),
            id: String::new(),
        }))
        .await
    {
        Ok(org) => Ok(org.into_inner().id),
        Err(status) if status.code() == Code::AlreadyExists => {
            let list = call(
                admin
                    .orgs()
                    .list_orgs(admin.request(pb::ListOrgsRequest {})),
                "list orgs",
            )
            .await?;
            list.orgs
                .into_iter()
                .find(|o| o.name == DEMO_ORG)
                .map(|o| o.id)
                .ok_or_else(|| DevError::Demo("org \"demo\" exists but is not listed".into()))
        }
        Err(status) => Err(status_error("create the demo org", &status)),
    }
}

async fn call<T>(
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    what: &str,
) -> Result<T, DevError> {
    request
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| status_error(what, &status))
}

fn status_error(what: &str, status: &tonic::Status) -> DevError {
    DevError::Demo(format!(
        "cannot {what}: {:?}: {}",
        status.code(),
        status.message()
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn banner_shows_the_api_key_exactly_once_and_only_on_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DevKeys::load_or_create(dir.path()).unwrap();
        let demo = Demo {
            data_dir: dir.path(),
            control_plane: "127.0.0.1:9200".parse().unwrap(),
            worker: "127.0.0.1:9100".parse().unwrap(),
            keys: &keys,
        };
        let secret = "mtk_0123456789abcdef0123456789abcdef";
        let first = demo.banner(&Outcome {
            org_id: "org_demo".into(),
            key: Some(Zeroizing::new(secret.into())),
        });
        assert_eq!(first.matches(secret).count(), 1, "{}", first.as_str());
        assert!(first.contains("\"x-api-key: $KEY\""), "{}", first.as_str());
        assert_eq!(
            first.capacity(),
            BANNER_CAPACITY,
            "the buffer holding the key never reallocated (no stray copy)"
        );
        for value in [&keys.master_key, &keys.fleet_key, &keys.admin_token] {
            assert!(
                !first.contains(value.as_str()),
                "a dev secret in the banner"
            );
        }
        let later = demo.banner(&Outcome {
            org_id: "org_demo".into(),
            key: None,
        });
        assert!(!later.contains("mtk_0"), "{}", later.as_str());
        assert!(later.contains("org_demo"), "{}", later.as_str());
    }
}
