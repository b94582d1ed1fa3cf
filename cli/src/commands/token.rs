//! `memtracectl token …`: agent tokens (PASETO v4.public) the control plane
//! signs and workers verify offline. The token appears only in the output
//! of `token create`, once; it is stored nowhere.

use crate::client::Admin;
use crate::commands::erasure::receipts::{KeysView, RotatedView, key_info};
use crate::commands::key::{Scope, parse_expires_in};
use crate::error::{CliError, Subject};
use crate::output::{Output, Render, cell, fields, rfc3339};
use clap::{Args, Subcommand};
use memtrace_common::receipt::KeySet;
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use std::io::{self, Write};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// mint an agent token; it is printed once
    Create(CreateTokenArgs),
    /// list the public keys workers verify tokens with (the control
    /// plane's tk_N, retired ones included, and the workers' wk_…)
    Keys,
    /// add the next token signing key version; it signs from now on
    #[command(name = "rotate-key")]
    RotateKey,
}

#[derive(Debug, Args)]
pub struct CreateTokenArgs {
    /// the org the token acts for
    #[arg(long, value_name = "ORG_ID")]
    pub org: String,
    /// bind the token to one agent: it writes only as this agent and reads
    /// only its memories
    #[arg(long, value_name = "AGENT_ID")]
    pub agent: Option<String>,
    /// comma-separated scopes [server default: read,write]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SCOPES")]
    pub scopes: Vec<Scope>,
    /// lifetime, e.g. 1h, 15m [server default: 1h; at most the org's
    /// tokens.max_ttl_seconds]
    #[arg(long, value_name = "DURATION", value_parser = parse_expires_in)]
    pub ttl: Option<u64>,
}

pub async fn run(command: TokenCommand, admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => {
            let mut scopes: Vec<String> = Vec::new();
            for scope in &args.scopes {
                if !scopes.iter().any(|s| s == scope.as_str()) {
                    scopes.push(scope.as_str().to_owned());
                }
            }
            let request = pb::CreateTokenRequest {
                org_id: args.org,
                agent_id: args.agent.unwrap_or_default(),
                scopes,
                ttl_seconds: args.ttl.unwrap_or(0),
            };
            let created = admin
                .api_keys()
                .create_token(admin.request(request))
                .await
                .map_err(|s| admin.fail(s, Subject::Org))?
                .into_inner();
            out.emit(&CreatedTokenView::try_from(created)?)
        }
        TokenCommand::Keys => {
            let keys = admin
                .master_keys()
                .list_token_keys(admin.request(pb::ListReceiptKeysRequest {}))
                .await
                .map_err(|s| admin.fail(s, Subject::None))?
                .into_inner();
            out.emit(&KeysView(KeySet {
                keys: keys.keys.into_iter().map(key_info).collect(),
            }))
        }
        TokenCommand::RotateKey => {
            let key = admin
                .master_keys()
                .rotate_token_key(admin.request(pb::RotateReceiptKeyRequest {}))
                .await
                .map_err(|s| admin.fail(s, Subject::None))?
                .into_inner();
            out.emit(&RotatedView(
                key_info(key),
                "token signing key",
                "tokens older keys signed verify until they expire",
            ))
        }
    }
}

/// `token create` result: the only place the token is ever shown.
#[derive(Debug, Serialize)]
pub struct CreatedTokenView {
    pub token_id: String,
    /// The token (`v4.public.…`).
    pub token: String,
    pub org_id: String,
    pub agent_id: Option<String>,
    pub scopes: Vec<String>,
    pub issued_at: Option<String>,
    pub expires_at: Option<String>,
    pub key_id: String,
}

impl TryFrom<pb::CreateTokenResponse> for CreatedTokenView {
    type Error = CliError;

    fn try_from(created: pb::CreateTokenResponse) -> Result<Self, CliError> {
        if created.token.is_empty() {
            return Err(CliError::new(
                "the control plane minted no token (empty response)",
            ));
        }
        Ok(Self {
            issued_at: rfc3339(created.issued_at.as_ref()),
            expires_at: rfc3339(created.expires_at.as_ref()),
            token_id: created.token_id,
            token: created.token,
            org_id: created.org_id,
            agent_id: (!created.agent_id.is_empty()).then_some(created.agent_id),
            scopes: created.scopes,
            key_id: created.key_id,
        })
    }
}

impl Render for CreatedTokenView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "minted agent token {} for org {}",
            self.token_id, self.org_id
        )?;
        fields(
            w,
            &[
                ("agent", cell(&self.agent_id, "any")),
                ("scopes", self.scopes.join(",")),
                ("expires", cell(&self.expires_at, "?")),
                ("signed by", self.key_id.clone()),
            ],
        )?;
        writeln!(w)?;
        writeln!(w, "    {}", self.token)?;
        writeln!(w)?;
        writeln!(w, "this token is shown only once and stored nowhere")
    }
}
