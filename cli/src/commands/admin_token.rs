//! `memtracectl admin-token …`: the credentials of the admin API itself
//! (`mta_…`). The secret appears only in the output of `admin-token create`;
//! listings show the public id (`adm_…`), never the secret.

use crate::client::Admin;
use crate::commands::key::parse_expires_in;
use crate::error::{CliError, Subject};
use crate::output::{Output, Render, cell, fields, rfc3339, table};
use clap::{Args, Subcommand, ValueEnum};
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use std::io::{self, Write};
use std::time::SystemTime;

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// create an admin token; the secret is printed once
    Create(CreateTokenArgs),
    /// list admin tokens (never their secrets)
    List {
        /// include revoked tokens
        #[arg(long)]
        all: bool,
    },
    /// revoke an admin token; it stops working at once
    Revoke {
        /// id of the token (see 'memtracectl admin-token list')
        #[arg(value_name = "TOKEN_ID")]
        token_id: String,
        /// revoke even the last active admin-role token (no change is
        /// possible afterwards until a new bootstrap token is registered at
        /// start)
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateTokenArgs {
    /// name of the token, e.g. who or what uses it
    #[arg(long)]
    pub name: String,
    /// admin: every call; reader: only calls that change nothing
    #[arg(long, value_enum)]
    pub role: Role,
    /// lifetime of the token, e.g. 30d, 12h (default: never expires)
    #[arg(long, value_name = "DURATION", value_parser = parse_expires_in)]
    pub expires_in: Option<u64>,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Admin,
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reader => "reader",
        }
    }
}

pub async fn run(
    command: AdminTokenCommand,
    admin: &Admin,
    out: &mut Output<'_>,
) -> anyhow::Result<()> {
    match command {
        AdminTokenCommand::Create(args) => {
            let request = pb::CreateAdminTokenRequest {
                name: args.name,
                role: args.role.as_str().to_owned(),
                expires_in_seconds: args.expires_in.unwrap_or(0),
            };
            let created = admin
                .admin_tokens()
                .create_admin_token(admin.request(request))
                .await
                .map_err(|s| admin.fail(s, Subject::AdminToken))?
                .into_inner();
            out.emit(&CreatedTokenView::try_from(created)?)
        }
        AdminTokenCommand::List { all } => {
            let list = admin
                .admin_tokens()
                .list_admin_tokens(admin.request(pb::ListAdminTokensRequest {
                    include_revoked: all,
                }))
                .await
                .map_err(|s| admin.fail(s, Subject::AdminToken))?
                .into_inner();
            out.emit(&TokenListView {
                tokens: list.tokens.iter().map(AdminTokenView::from).collect(),
            })
        }
        AdminTokenCommand::Revoke { token_id, force } => {
            let token = admin
                .admin_tokens()
                .revoke_admin_token(admin.request(pb::RevokeAdminTokenRequest { token_id, force }))
                .await
                .map_err(|s| admin.fail(s, Subject::AdminToken))?
                .into_inner();
            out.emit(&RevokedTokenView(AdminTokenView::from(&token)))
        }
    }
}

/// `admin-token create` result: the only place the secret is ever shown.
#[derive(Debug, Serialize)]
pub struct CreatedTokenView {
    pub id: String,
    /// The full admin token (`mta_…`).
    pub token: String,
    pub name: String,
    pub role: String,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
}

impl TryFrom<pb::CreateAdminTokenResponse> for CreatedTokenView {
    type Error = CliError;

    fn try_from(created: pb::CreateAdminTokenResponse) -> Result<Self, CliError> {
        let token = created.token.ok_or_else(|| {
            CliError::new("the control plane created an admin token but returned no token record")
        })?;
        if created.secret.is_empty() {
            return Err(CliError::new(format!(
                "the control plane created admin token {} but returned no secret",
                token.id
            ))
            .with_hint(format!(
                "revoke it with 'memtracectl admin-token revoke {}' and create another",
                token.id
            )));
        }
        Ok(Self {
            created_at: rfc3339(token.created_at.as_ref()),
            expires_at: rfc3339(token.expires_at.as_ref()),
            id: token.id,
            token: created.secret,
            name: token.name,
            role: token.role,
        })
    }
}

impl Render for CreatedTokenView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "created admin token {} ({}) with role {}",
            self.id, self.name, self.role
        )?;
        fields(w, &[("expires", cell(&self.expires_at, "never"))])?;
        writeln!(w)?;
        writeln!(w, "    {}", self.token)?;
        writeln!(w)?;
        writeln!(
            w,
            "this token is shown only once: store it now (use it with MEMTRACE_ADMIN_TOKEN)"
        )
    }
}

/// One admin token without its secret, as in `admin-token list` and `revoke`.
#[derive(Debug, Serialize)]
pub struct AdminTokenView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub status: &'static str,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<&pb::AdminToken> for AdminTokenView {
    fn from(token: &pb::AdminToken) -> Self {
        let now = prost_types::Timestamp::from(SystemTime::now());
        let expired = token
            .expires_at
            .is_some_and(|at| (at.seconds, at.nanos) <= (now.seconds, now.nanos));
        let status = if token.revoked_at.is_some() {
            "revoked"
        } else if expired {
            "expired"
        } else {
            "active"
        };
        Self {
            id: token.id.clone(),
            name: token.name.clone(),
            role: token.role.clone(),
            status,
            created_at: rfc3339(token.created_at.as_ref()),
            expires_at: rfc3339(token.expires_at.as_ref()),
            last_used_at: rfc3339(token.last_used_at.as_ref()),
            revoked_at: rfc3339(token.revoked_at.as_ref()),
        }
    }
}

/// `admin-token list` result.
#[derive(Debug, Serialize)]
pub struct TokenListView {
    pub tokens: Vec<AdminTokenView>,
}

impl Render for TokenListView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.tokens.is_empty() {
            return writeln!(
                w,
                "no admin tokens; create one with 'memtracectl admin-token create --name NAME --role ROLE'"
            );
        }
        let rows: Vec<Vec<String>> = self
            .tokens
            .iter()
            .map(|token| {
                vec![
                    token.id.clone(),
                    token.name.clone(),
                    token.role.clone(),
                    token.status.to_owned(),
                    cell(&token.created_at, "-"),
                    cell(&token.expires_at, "never"),
                    cell(&token.last_used_at, "never"),
                ]
            })
            .collect();
        table(
            w,
            &[
                "id",
                "name",
                "role",
                "status",
                "created",
                "expires",
                "last used",
            ],
            &rows,
        )
    }
}

/// `admin-token revoke` result: the revoked token (json: the listed shape).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct RevokedTokenView(pub AdminTokenView);

impl Render for RevokedTokenView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let token = &self.0;
        writeln!(
            w,
            "revoked admin token {} ({}, role {})",
            token.id, token.name, token.role
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn admin_token() -> pb::AdminToken {
        pb::AdminToken {
            id: "adm_0123456789abcdef".into(),
            name: "ops".into(),
            role: "reader".into(),
            created_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn created_token_shows_the_secret_once_with_its_id() {
        let view = CreatedTokenView::try_from(pb::CreateAdminTokenResponse {
            token: Some(admin_token()),
            secret: "mta_secret".into(),
        })
        .unwrap();
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["id"], "adm_0123456789abcdef");
        assert_eq!(json["token"], "mta_secret");
        assert_eq!(json["role"], "reader");
        assert_eq!(json["created_at"], "2023-11-14T22:13:20Z");
        assert_eq!(json.as_object().unwrap().len(), 6);
        let mut buf = Vec::new();
        view.table(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("\n    mta_secret\n"), "{text}");
        assert!(text.contains("shown only once"));

        let no_secret = CreatedTokenView::try_from(pb::CreateAdminTokenResponse {
            token: Some(admin_token()),
            secret: String::new(),
        })
        .unwrap_err();
        assert!(
            no_secret
                .hint()
                .unwrap()
                .contains("admin-token revoke adm_0123456789abcdef")
        );
    }

    #[test]
    fn listed_tokens_never_carry_a_secret_and_show_status() {
        let mut revoked = admin_token();
        revoked.revoked_at = Some(Timestamp {
            seconds: 1_700_000_100,
            nanos: 0,
        });
        let mut expired = admin_token();
        expired.expires_at = Some(Timestamp {
            seconds: 1_700_000_100,
            nanos: 0,
        });
        let list = TokenListView {
            tokens: [admin_token(), revoked, expired]
                .iter()
                .map(AdminTokenView::from)
                .collect(),
        };
        let json = serde_json::to_value(&list).unwrap();
        let mut fields: Vec<&str> = json["tokens"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "created_at",
                "expires_at",
                "id",
                "last_used_at",
                "name",
                "revoked_at",
                "role",
                "status"
            ]
        );
        let statuses: Vec<&str> = list.tokens.iter().map(|t| t.status).collect();
        assert_eq!(statuses, ["active", "revoked", "expired"]);
        let mut buf = Vec::new();
        list.table(&mut buf).unwrap();
        assert!(String::from_utf8(buf).unwrap().contains("LAST USED"));
    }
}
