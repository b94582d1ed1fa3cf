//! `memtrace-cli` owns `memtracectl`, the operator CLI of memtrace: the
//! command-line grammar ([`args`]), the gRPC client of the control plane's
//! `memtrace.admin.v1` services (orgs, arc bindings, api keys, admin tokens,
//! master keys, runtime settings, the audit trail, erasure receipt keys),
//! the offline verification of erasure receipts,
//! the rendering of results as tables or json, and the mapping of failures to
//! one `error:` line with a hint ([`error`]). It owns no domain logic: the
//! control plane validates and decides; this crate only asks and shows.
//!
//! Results go to `out` (stdout; in json mode exactly one document), notes
//! and errors to `diag` (stderr).

pub mod args;
pub mod client;
pub mod commands;
pub mod error;
pub mod output;
pub mod secret;
pub mod worker;

use args::{Cli, Command};
use client::Admin;
use memtrace_common::config::Env;
use output::Output;
use std::io::Write;

pub use error::{CliError, report};

/// Runs one parsed command. The environment is injected (for
/// `MEMTRACE_CONTROL_PLANE_URL`, `MEMTRACE_CONTROL_PLANE_CA_FILE` and
/// `MEMTRACE_ADMIN_TOKEN`); results are written to `out`, notes for people
/// (and the warning for a secret passed in argv) to `diag`.
pub async fn run(
    cli: Cli,
    env: &Env,
    out: &mut dyn Write,
    diag: &mut dyn Write,
) -> anyhow::Result<()> {
    if cli.global.token.is_some() {
        writeln!(
            diag,
            "{}",
            secret::argv_warning(
                "--token",
                "admin token",
                &format!(
                    "set {} or pass --token-file PATH (- for stdin)",
                    args::TOKEN_ENV
                )
            )
        )?;
    }
    let command = cli.command;
    if let Command::Dev(args) = command {
        return commands::dev::run(args, env, out).await;
    }
    if let Command::Mcp = command {
        // stdout carries the protocol: it is written by the server alone
        return commands::mcp::run(&cli.global, env, diag).await;
    }
    if let Command::Org(commands::org::OrgCommand::Export(args)) = command {
        // JSONL straight to `out` (or a file), not through `Output`
        let admin = admin(&cli.global, env).await?;
        return commands::export::run(args, &admin, env, cli.global.timeout(), out, diag).await;
    }
    let mut output = Output::new(cli.global.output, out, diag);
    match command {
        Command::Keygen(command) => commands::keygen::run(command, &mut output),
        Command::Org(command) => {
            let admin = admin(&cli.global, env).await?;
            commands::org::run(command, &admin, &mut output).await
        }
        Command::Key(command) => {
            let admin = admin(&cli.global, env).await?;
            commands::key::run(command, &admin, &mut output).await
        }
        Command::Token(command) => {
            let admin = admin(&cli.global, env).await?;
            commands::token::run(command, &admin, &mut output).await
        }
        Command::AdminToken(command) => {
            let admin = admin(&cli.global, env).await?;
            commands::admin_token::run(command, &admin, &mut output).await
        }
        Command::MasterKey(command) => {
            let admin = admin(&cli.global, env).await?;
            commands::master_key::run(command, &admin, &mut output).await
        }
        Command::Config(command) => {
            let admin = admin(&cli.global, env).await?;
            commands::config::run(command, &admin, &mut output).await
        }
        Command::Audit(command) => {
            let admin = admin(&cli.global, env).await?;
            commands::audit::run(command, &admin, &mut output).await
        }
        Command::Erasure(commands::erasure::ErasureCommand::Verify { receipt, keys }) => {
            commands::erasure::verify(
                &receipt,
                keys.as_deref(),
                &mut std::io::stdin(),
                &mut output,
            )
        }
        Command::Erasure(command) => {
            let admin = admin(&cli.global, env).await?;
            commands::erasure::run(command, &admin, &mut output).await
        }
        Command::Import(command) => {
            let admin = admin(&cli.global, env).await?;
            commands::import::run(command, &admin, &mut output).await
        }
        Command::Workers => {
            let admin = admin(&cli.global, env).await?;
            commands::cluster::workers(&admin, &mut output).await
        }
        Command::Status => {
            let admin = admin(&cli.global, env).await?;
            commands::cluster::status(&admin, &mut output).await
        }
        // handled above: they write to `out` or stdout directly, not through `Output`
        Command::Dev(_) | Command::Mcp => Ok(()),
    }
}

/// Connects as the admin; `--token-file -` reads this process's stdin.
async fn admin(global: &args::GlobalArgs, env: &Env) -> Result<Admin, CliError> {
    Admin::connect(global, env, &mut std::io::stdin()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    async fn run_args(args: &[&str], env: &Env) -> (anyhow::Result<()>, String, String) {
        let cli = Cli::try_parse_from(std::iter::once("memtracectl").chain(args.iter().copied()))
            .unwrap();
        let (mut out, mut diag) = (Vec::new(), Vec::new());
        let result = run(cli, env, &mut out, &mut diag).await;
        (
            result,
            String::from_utf8(out).unwrap(),
            String::from_utf8(diag).unwrap(),
        )
    }

    #[tokio::test]
    async fn keygen_master_prints_only_the_key_on_stdout() {
        let (result, out, diag) = run_args(&["keygen", "master"], &Env::default()).await;
        result.unwrap();
        let key = out.trim_end();
        assert_eq!(out.lines().count(), 1);
        assert!(memtrace_common::keys::parse_key("K", Some(key)).is_ok());
        assert!(diag.contains("MEMTRACE_MASTER_KEY"));
    }

    #[tokio::test]
    async fn keygen_master_json_is_one_document() {
        let (result, out, diag) =
            run_args(&["keygen", "master", "-o", "json"], &Env::default()).await;
        result.unwrap();
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let key = json["key"].as_str().unwrap();
        assert!(memtrace_common::keys::parse_key("K", Some(key)).is_ok());
        assert!(diag.is_empty());
    }

    /// `erasure verify` needs no token and no server: it checks the file.
    #[tokio::test]
    async fn erasure_verify_is_offline_and_names_the_failed_check() {
        use memtrace_common::receipt::{ErasureTarget, KeySet, Receipt, ReceiptSigningKey};
        let now = jiff::Timestamp::now();
        let receipt = Receipt {
            receipt_id: "rcp_cli".into(),
            erasure_id: "era_cli".into(),
            org_id: "org_cli".into(),
            target: ErasureTarget::Embedded,
            scope: serde_json::json!({"kind": "org"}),
            requested_by: "fp-cli".into(),
            requested_at: now,
            started_at: now,
            finished_at: now,
            rows_removed: [("memories".to_owned(), 5)].into(),
            verification: Default::default(),
            issued_at: now,
        };
        let key = ReceiptSigningKey::from_seed("rk_1", &[3; 32]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipt.json");
        let text = key.sign(receipt).unwrap().to_json_pretty();
        std::fs::write(&path, &text).unwrap();
        let path = path.to_str().unwrap();

        let (result, out, _) = run_args(&["erasure", "verify", path], &Env::default()).await;
        result.unwrap();
        for shown in [
            "signature valid",
            "rcp_cli",
            "org_cli",
            "memories=5",
            "rk_1",
            "SHA256:",
        ] {
            assert!(out.contains(shown), "{shown} in {out}");
        }
        let (result, out, _) =
            run_args(&["erasure", "verify", path, "-o", "json"], &Env::default()).await;
        result.unwrap();
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["verified"], true);
        assert_eq!(json["rows_removed"]["memories"], 5);
        assert_eq!(json["key_trusted"], false);

        // trusted keys: this one, then another
        let keys_path = dir.path().join("keys.json");
        let set = |k: &ReceiptSigningKey| {
            serde_json::json!({"keys": [{"key_id": k.key_id(), "public_key": k.public_key_base64()}]})
                .to_string()
        };
        std::fs::write(&keys_path, set(&key)).unwrap();
        let keys = keys_path.to_str().unwrap();
        assert!(KeySet::from_json(&set(&key)).is_ok());
        let (result, out, _) = run_args(
            &["erasure", "verify", path, "--keys", keys],
            &Env::default(),
        )
        .await;
        result.unwrap();
        assert!(out.contains("trusted keys (--keys)"), "{out}");
        std::fs::write(
            &keys_path,
            set(&ReceiptSigningKey::from_seed("rk_1", &[4; 32])),
        )
        .unwrap();
        let (result, _, _) = run_args(
            &["erasure", "verify", path, "--keys", keys],
            &Env::default(),
        )
        .await;
        let mut buf = Vec::new();
        report(&result.unwrap_err(), &mut buf);
        let text_err = String::from_utf8(buf).unwrap();
        assert!(
            text_err
                .starts_with("error: receipt verification failed (trusted_key check): key rk_1"),
            "{text_err}"
        );

        // one edited byte
        std::fs::write(
            dir.path().join("receipt.json"),
            text.replace("\"memories\": 5", "\"memories\": 4"),
        )
        .unwrap();
        let (result, out, _) =
            run_args(&["erasure", "verify", path, "-o", "json"], &Env::default()).await;
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["verified"], false);
        assert_eq!(json["failed_check"], "signature");
        let mut buf = Vec::new();
        report(&result.unwrap_err(), &mut buf);
        let text_err = String::from_utf8(buf).unwrap();
        assert_eq!(
            text_err.lines().next().unwrap().matches("error:").count(),
            1
        );
        assert!(text_err.contains("(signature check)"), "{text_err}");
    }

    #[tokio::test]
    async fn server_commands_need_a_token() {
        let (result, out, _) = run_args(&["org", "list"], &Env::default()).await;
        let err = result.unwrap_err();
        assert!(out.is_empty());
        let mut buf = Vec::new();
        report(&err, &mut buf);
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with(
            "error: no admin token\n  hint: set MEMTRACE_ADMIN_TOKEN or pass --token-file PATH"
        ));
    }

    #[tokio::test]
    async fn a_token_in_argv_is_warned_about_on_stderr() {
        let (_, out, diag) = run_args(
            &["--token", "mta_s3cret", "--server", "nope", "org", "list"],
            &Env::default(),
        )
        .await;
        assert!(out.is_empty());
        let warning = diag.lines().next().unwrap();
        assert!(
            warning.starts_with("warning: --token puts the admin token on the command line")
                && warning.contains("other users of this machine")
                && warning.contains("MEMTRACE_ADMIN_TOKEN or pass --token-file"),
            "{diag}"
        );
        assert!(!diag.contains("mta_s3cret"), "{diag}");
    }

    #[tokio::test]
    async fn token_from_env_then_bad_server_names_the_variable() {
        let env = Env::from_pairs([
            (args::TOKEN_ENV, "mta_token"),
            (args::SERVER_ENV, "localhost"),
        ]);
        let (result, _, _) = run_args(&["key", "list", "--org", "org_1"], &env).await;
        let err = result.unwrap_err();
        assert!(
            err.to_string()
                .contains("invalid MEMTRACE_CONTROL_PLANE_URL"),
            "{err}"
        );
    }
}
