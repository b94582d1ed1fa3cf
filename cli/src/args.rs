//! The command-line grammar of `memtracectl` (clap derive), compatible with the
//! original `memtrace org …`, `memtrace key …` and `memtrace keygen master`.
//!
//! The server address and the admin token are resolved against an injected
//! [`Env`](memtrace_common::config::Env) by the caller, not by clap, so parsing
//! never reads the process environment behind a test's back.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::time::Duration;

/// Variable that sets the control plane address when `--server` is absent.
pub const SERVER_ENV: &str = "MEMTRACE_CONTROL_PLANE_URL";
/// Variable that sets the admin token when `--token` is absent.
pub const TOKEN_ENV: &str = "MEMTRACE_ADMIN_TOKEN";
/// Address used when neither `--server` nor [`SERVER_ENV`] is set.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9200";

/// `memtracectl`: operate a memtrace control plane.
#[derive(Debug, Parser)]
#[command(
    name = "memtracectl",
    version,
    about = "operate a memtrace control plane: orgs, arc bindings, api keys, master keys, runtime config, audit",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted by every command.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// control plane url [env: MEMTRACE_CONTROL_PLANE_URL] [default: http://127.0.0.1:9200]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// admin token sent as `authorization: Bearer <token>` [env: MEMTRACE_ADMIN_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// output format
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// seconds to wait for the connection and for each call
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout: u64,
}

impl GlobalArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

/// How results are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// aligned columns for people
    Table,
    /// exactly one json document
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// generate key material offline (no server needed)
    #[command(subcommand)]
    Keygen(KeygenCommand),
    /// manage organizations and their arc bindings
    #[command(subcommand)]
    Org(OrgCommand),
    /// manage data-plane api keys (mtk_…)
    #[command(subcommand)]
    Key(KeyCommand),
    /// inspect and rotate the master key ring
    #[command(subcommand)]
    Keys(KeysCommand),
    /// runtime settings: list, get, set, reset, export, import, audit, rollback
    #[command(subcommand)]
    Config(crate::commands::config::ConfigCommand),
    /// the admin audit trail: list entries, verify the hash chain
    #[command(subcommand)]
    Audit(crate::commands::audit::AuditCommand),
    /// list the registered data-plane workers
    Workers,
    /// the state bus, the newest published revision, and which workers applied it
    Status,
    /// run everything (control plane, in-process bus, worker) in one process for development
    Dev(crate::commands::dev::DevArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeygenCommand {
    /// print a fresh base64 32-byte key for MEMTRACE_MASTER_KEY
    Master,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// create an organization
    Create {
        /// display name of the org
        name: String,
    },
    /// list organizations
    List,
    /// show one organization
    Get {
        /// id of the org (see 'memtracectl org list')
        #[arg(value_name = "ORG_ID")]
        org_id: String,
    },
    /// delete an organization with its arc binding and api keys
    Delete {
        /// id of the org (see 'memtracectl org list')
        #[arg(value_name = "ORG_ID")]
        org_id: String,
    },
    /// bind the arc instance that stores the org's memories
    AddArc(AddArcArgs),
    /// show the org's arc binding (the api key masked)
    ShowArc {
        /// id of the org (see 'memtracectl org list')
        #[arg(value_name = "ORG_ID")]
        org_id: String,
    },
    /// remove the org's arc binding
    RemoveArc {
        /// id of the org (see 'memtracectl org list')
        #[arg(value_name = "ORG_ID")]
        org_id: String,
    },
    /// check that the control plane can reach the org's arc (GET <url>/health)
    TestArc {
        /// id of the org (see 'memtracectl org list')
        #[arg(value_name = "ORG_ID")]
        org_id: String,
    },
}

#[derive(Debug, Args)]
pub struct AddArcArgs {
    /// id of the org (see 'memtracectl org list')
    #[arg(value_name = "ORG_ID")]
    pub org_id: String,
    /// base url of the arc instance, e.g. http://arc:8000
    #[arg(long)]
    pub url: String,
    /// arc database that holds the org's memories
    #[arg(long)]
    pub database: String,
    /// arc api key (stored envelope-encrypted, never shown again)
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// arc measurement for memory rows [server default: events]
    #[arg(long)]
    pub measurement: Option<String>,
    /// replace an existing binding instead of failing
    #[arg(long)]
    pub replace: bool,
}

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

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// show the master key versions and how many records each wraps
    Status,
    /// rewrap every data key with the active master key
    RotateMaster,
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
