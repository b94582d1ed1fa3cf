//! The command-line grammar of `memtracectl` (clap derive) above the command
//! groups: the global flags and the list of groups. Each group's own
//! arguments live with its command in [`crate::commands`]. Compatible with
//! the original `memtrace org …`, `memtrace key …` and `memtrace keygen master`.
//!
//! The server address, its CA and the admin token are resolved against an
//! injected [`Env`](memtrace_common::config::Env) by the caller, not by clap,
//! so parsing never reads the process environment behind a test's back.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Variable that sets the control plane address when `--server` is absent.
pub const SERVER_ENV: &str = "MEMTRACE_CONTROL_PLANE_URL";
/// Variable that sets the CA of an `https://` control plane when
/// `--ca-file` is absent.
pub const CA_FILE_ENV: &str = "MEMTRACE_CONTROL_PLANE_CA_FILE";
/// Variable that sets the admin token when `--token` and `--token-file`
/// are absent.
pub const TOKEN_ENV: &str = "MEMTRACE_ADMIN_TOKEN";
/// Address used when neither `--server` nor [`SERVER_ENV`] is set.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9200";

/// `memtracectl`: operate a memtrace control plane.
#[derive(Debug, Parser)]
#[command(
    name = "memtracectl",
    version,
    about = "operate a memtrace control plane: orgs, arc bindings, api keys, admin tokens, master keys, runtime config, audit, erasure receipts; serve MCP for agents (memtracectl mcp)",
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
    /// control plane url, http:// or https:// [env: MEMTRACE_CONTROL_PLANE_URL] [default: http://127.0.0.1:9200]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// PEM file of the CA that signed an https:// control plane's certificate (default: the system's CAs) [env: MEMTRACE_CONTROL_PLANE_CA_FILE]
    #[arg(long, global = true, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// admin token sent as `authorization: Bearer <token>`; visible to other users of the machine: prefer --token-file or the variable [env: MEMTRACE_ADMIN_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// read the admin token from this file (- for stdin) instead of the command line
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
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
    Keygen(crate::commands::keygen::KeygenCommand),
    /// manage organizations and their arc bindings
    #[command(subcommand)]
    Org(crate::commands::org::OrgCommand),
    /// manage data-plane api keys (mtk_…)
    #[command(subcommand)]
    Key(crate::commands::key::KeyCommand),
    /// mint agent tokens (v4.public.…): short-lived, optionally bound to one agent
    #[command(subcommand)]
    Token(crate::commands::token::TokenCommand),
    /// manage admin tokens (mta_…): create with a role, list, revoke
    #[command(subcommand, name = "admin-token")]
    AdminToken(crate::commands::admin_token::AdminTokenCommand),
    /// inspect and rotate the master key ring (formerly `keys`)
    #[command(subcommand, name = "master-key", alias = "keys")]
    MasterKey(crate::commands::master_key::MasterKeyCommand),
    /// runtime settings: list, get, set, reset, export, import, audit, rollback
    #[command(subcommand)]
    Config(crate::commands::config::ConfigCommand),
    /// the admin audit trail: list entries, verify the hash chain
    #[command(subcommand)]
    Audit(crate::commands::audit::AuditCommand),
    /// erasure jobs (memories deleted by tenants and deleted orgs, being erased) and their signed receipts: list, show, keys, verify offline
    #[command(subcommand)]
    Erasure(crate::commands::erasure::ErasureCommand),
    /// migrate from the Go memtrace: import its SQLite file (orgs, arc bindings, api keys, agents, sessions)
    #[command(subcommand)]
    Import(crate::commands::import::ImportCommand),
    /// list the registered data-plane workers
    Workers,
    /// the state bus, the newest published revision, and which workers applied it
    Status,
    /// run everything (control plane, in-process bus, worker) in one process for development
    Dev(crate::commands::dev::DevArgs),
    /// serve MCP (Model Context Protocol) on stdio: memtrace's seven memory tools for an agent host, calling the worker at MEMTRACE_URL with the API key in MEMTRACE_API_KEY (--timeout bounds each call)
    Mcp,
}
