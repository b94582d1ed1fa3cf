//! `memtracectl key …`: data-plane api keys. The secret appears only in the
//! output of `key create`; listings never carry it.

use crate::client::Admin;
use crate::error::{CliError, Subject};
use crate::output::{Output, Render, cell, fields, rfc3339, table};
use clap::{Args, Subcommand, ValueEnum};
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use std::io::{self, Write};
use std::time::SystemTime;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// create an api key; the secret is printed once
    Create(CreateKeyArgs),
    /// list an org's api keys (never their secrets)
    List {
        /// the org whose keys to list
        #[arg(long, value_name = "ORG_ID")]
        org: String,
        /// include revoked keys
        #[arg(long)]
        all: bool,
    },
    /// revoke an api key
    Revoke {
        /// id of the key (see 'memtracectl key list --org ORG_ID')
        #[arg(value_name = "KEY_ID")]
        key_id: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// the org the key belongs to
    #[arg(long, value_name = "ORG_ID")]
    pub org: String,
    /// name of the key, e.g. the agent that uses it
    #[arg(long)]
    pub name: String,
    /// comma-separated scopes [server default: read,write]
    #[arg(
        long,
        visible_alias = "permissions",
        value_enum,
        value_delimiter = ',',
        value_name = "SCOPES"
    )]
    pub scopes: Vec<Scope>,
    /// lifetime of the key, e.g. 30d, 12h (default: never expires)
    #[arg(long, value_name = "DURATION", value_parser = parse_expires_in)]
    pub expires_in: Option<u64>,
}

impl CreateKeyArgs {
    /// The scopes as sent on the wire, deduplicated, in the order given.
    /// Empty means the server default.
    pub fn scope_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::with_capacity(self.scopes.len());
        for scope in &self.scopes {
            let name = scope.as_str();
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        names
    }
}

/// What an api key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// Parses a humantime duration (`30d`, `12h`, `1h 30m`) into whole seconds.
pub fn parse_expires_in(value: &str) -> Result<u64, String> {
    let duration = humantime::parse_duration(value.trim())
        .map_err(|err| format!("expected a duration like 30d or 12h ({err})"))?;
    match duration.as_secs() {
        0 => Err("must be at least one second".to_owned()),
        secs => Ok(secs),
    }
}

pub async fn run(command: KeyCommand, admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create(args) => create(args, admin, out).await,
        KeyCommand::List { org, all } => {
            let list = admin
                .api_keys()
                .list_api_keys(admin.request(pb::ListApiKeysRequest {
                    org_id: org,
                    include_revoked: all,
                }))
                .await
                .map_err(|s| admin.fail(s, Subject::Org))?
                .into_inner();
            out.emit(&KeyListView {
                keys: list.keys.iter().map(ApiKeyView::from).collect(),
            })
        }
        KeyCommand::Revoke { key_id } => {
            let key = admin
                .api_keys()
                .revoke_api_key(admin.request(pb::RevokeApiKeyRequest { key_id }))
                .await
                .map_err(|s| admin.fail(s, Subject::Key))?
                .into_inner();
            out.emit(&RevokedKeyView(ApiKeyView::from(&key)))
        }
    }
}

async fn create(args: CreateKeyArgs, admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    let request = pb::CreateApiKeyRequest {
        org_id: args.org.clone(),
        name: args.name.clone(),
        scopes: args.scope_names(),
        expires_in_seconds: args.expires_in.unwrap_or(0),
    };
    let created = admin
        .api_keys()
        .create_api_key(admin.request(request))
        .await
        .map_err(|s| admin.fail(s, Subject::Org))?
        .into_inner();
    out.emit(&CreatedKeyView::try_from(created)?)
}

/// `key create` result: the only place the secret is ever shown.
#[derive(Debug, Serialize)]
pub struct CreatedKeyView {
    pub id: String,
    /// The full api key (`mtk_…`).
    pub key: String,
    pub org_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
}

impl TryFrom<pb::CreateApiKeyResponse> for CreatedKeyView {
    type Error = CliError;

    fn try_from(created: pb::CreateApiKeyResponse) -> Result<Self, CliError> {
        let key = created.key.ok_or_else(|| {
            CliError::new("the control plane created a key but returned no key record")
        })?;
        if created.secret.is_empty() {
            return Err(CliError::new(format!(
                "the control plane created key {} but returned no secret",
                key.id
            ))
            .with_hint(format!(
                "revoke it with 'memtracectl key revoke {}' and create another",
                key.id
            )));
        }
        Ok(Self {
            created_at: rfc3339(key.created_at.as_ref()),
            expires_at: rfc3339(key.expires_at.as_ref()),
            id: key.id,
            key: created.secret,
            org_id: key.org_id,
            name: key.name,
            scopes: key.scopes,
        })
    }
}

impl Render for CreatedKeyView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "created api key {} ({}) for org {}",
            self.id, self.name, self.org_id
        )?;
        fields(
            w,
            &[
                ("scopes", self.scopes.join(",")),
                ("expires", cell(&self.expires_at, "never")),
            ],
        )?;
        writeln!(w)?;
        writeln!(w, "    {}", self.key)?;
        writeln!(w)?;
        writeln!(w, "this key is shown only once: store it now")
    }
}

/// One api key without its secret, as in `key list` and `key revoke`.
#[derive(Debug, Serialize)]
pub struct ApiKeyView {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// Imported from the Go memtrace: accepted in its old format, deprecated.
    pub legacy: bool,
    #[serde(skip)]
    expired: bool,
}

impl From<&pb::ApiKey> for ApiKeyView {
    fn from(key: &pb::ApiKey) -> Self {
        let now = prost_types::Timestamp::from(SystemTime::now());
        Self {
            id: key.id.clone(),
            org_id: key.org_id.clone(),
            name: key.name.clone(),
            scopes: key.scopes.clone(),
            created_at: rfc3339(key.created_at.as_ref()),
            expires_at: rfc3339(key.expires_at.as_ref()),
            last_used_at: rfc3339(key.last_used_at.as_ref()),
            revoked_at: rfc3339(key.revoked_at.as_ref()),
            legacy: key.legacy,
            expired: key
                .expires_at
                .is_some_and(|at| (at.seconds, at.nanos) <= (now.seconds, now.nanos)),
        }
    }
}

impl ApiKeyView {
    fn status(&self) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expired {
            "expired"
        } else {
            "active"
        }
    }
}

/// `key list` result.
#[derive(Debug, Serialize)]
pub struct KeyListView {
    pub keys: Vec<ApiKeyView>,
}

impl Render for KeyListView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.keys.is_empty() {
            return writeln!(
                w,
                "no api keys; create one with 'memtracectl key create --org ORG_ID --name NAME'"
            );
        }
        let rows: Vec<Vec<String>> = self
            .keys
            .iter()
            .map(|key| {
                vec![
                    key.id.clone(),
                    key.name.clone(),
                    key.scopes.join(","),
                    key.status().to_owned(),
                    if key.legacy {
                        "legacy (Go memtrace)"
                    } else {
                        "mtk"
                    }
                    .to_owned(),
                    cell(&key.created_at, "-"),
                    cell(&key.expires_at, "never"),
                    cell(&key.last_used_at, "never"),
                ]
            })
            .collect();
        table(
            w,
            &[
                "id",
                "name",
                "scopes",
                "status",
                "format",
                "created",
                "expires",
                "last used",
            ],
            &rows,
        )
    }
}

/// `key revoke` result: the revoked key (json: the same shape as a listed key).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct RevokedKeyView(pub ApiKeyView);

impl Render for RevokedKeyView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let key = &self.0;
        writeln!(
            w,
            "revoked api key {} ({}) of org {}",
            key.id, key.name, key.org_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn api_key() -> pb::ApiKey {
        pb::ApiKey {
            id: "key_0123456789abcdef".into(),
            org_id: "org_1".into(),
            name: "agent".into(),
            scopes: vec!["read".into(), "write".into()],
            created_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
            legacy: false,
        }
    }

    #[test]
    fn created_key_json_has_the_required_fields() {
        let view = CreatedKeyView::try_from(pb::CreateApiKeyResponse {
            key: Some(api_key()),
            secret: "mtk_secret".into(),
        })
        .unwrap();
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["id"], "key_0123456789abcdef");
        assert_eq!(json["key"], "mtk_secret");
        assert_eq!(json["org_id"], "org_1");
        assert_eq!(json["name"], "agent");
        assert_eq!(json["scopes"], serde_json::json!(["read", "write"]));
        assert_eq!(json["created_at"], "2023-11-14T22:13:20Z");
        assert!(json["expires_at"].is_null());
        assert_eq!(json.as_object().unwrap().len(), 7);

        let mut buf = Vec::new();
        view.table(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("\n    mtk_secret\n"));
        assert!(text.contains("shown only once"));
    }

    #[test]
    fn created_key_without_record_or_secret_is_an_error() {
        let missing = CreatedKeyView::try_from(pb::CreateApiKeyResponse {
            key: None,
            secret: "mtk_x".into(),
        });
        assert!(missing.is_err());
        let no_secret = CreatedKeyView::try_from(pb::CreateApiKeyResponse {
            key: Some(api_key()),
            secret: String::new(),
        })
        .unwrap_err();
        assert!(
            no_secret
                .hint()
                .unwrap()
                .contains("key revoke key_0123456789abcdef")
        );
    }

    #[test]
    fn listed_keys_never_carry_a_secret_and_show_status() {
        let mut revoked = api_key();
        revoked.revoked_at = Some(Timestamp {
            seconds: 1_700_000_100,
            nanos: 0,
        });
        let mut expired = api_key();
        expired.legacy = true;
        expired.expires_at = Some(Timestamp {
            seconds: 1_700_000_100,
            nanos: 0,
        });
        let list = KeyListView {
            keys: vec![
                ApiKeyView::from(&api_key()),
                ApiKeyView::from(&revoked),
                ApiKeyView::from(&expired),
            ],
        };
        let json = serde_json::to_value(&list).unwrap();
        let first = json["keys"][0].as_object().unwrap();
        let keys: Vec<&str> = first.keys().map(String::as_str).collect();
        let mut expected = [
            "id",
            "org_id",
            "name",
            "scopes",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "legacy",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(json["keys"][1]["revoked_at"], "2023-11-14T22:15:00Z");
        let statuses: Vec<&str> = list.keys.iter().map(ApiKeyView::status).collect();
        assert_eq!(statuses, ["active", "revoked", "expired"]);
        assert_eq!(json["keys"][2]["legacy"], true, "imported keys are marked");
        let mut buf = Vec::new();
        list.table(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("legacy (Go memtrace)"), "{text}");
    }
}
