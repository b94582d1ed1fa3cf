//! The command-line grammar: the original's flag names, humantime expiries,
//! global flags anywhere, and usage errors (exit 2) for bad values.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use clap::CommandFactory;
use clap::Parser;
use clap::error::ErrorKind;
use memtrace_cli::args::*;
use memtrace_cli::commands::admin_token::{AdminTokenCommand, Role};
use memtrace_cli::commands::key::{CreateKeyArgs, KeyCommand, Scope, parse_expires_in};
use memtrace_cli::commands::keygen::KeygenCommand;
use memtrace_cli::commands::master_key::MasterKeyCommand;
use memtrace_cli::commands::org::OrgCommand;
use std::time::Duration;

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("memtracectl").chain(args.iter().copied())).unwrap()
}

fn parse_err(args: &[&str]) -> clap::Error {
    Cli::try_parse_from(std::iter::once("memtracectl").chain(args.iter().copied())).unwrap_err()
}

fn create_args(cli: Cli) -> CreateKeyArgs {
    match cli.command {
        Command::Key(KeyCommand::Create(args)) => args,
        other => panic!("expected key create, got {other:?}"),
    }
}

#[test]
fn grammar_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn permissions_is_an_alias_of_scopes() {
    let with_alias = create_args(parse(&[
        "key",
        "create",
        "--org",
        "org_1",
        "--name",
        "agent",
        "--permissions",
        "read,admin",
    ]));
    assert_eq!(with_alias.scopes, vec![Scope::Read, Scope::Admin]);
    let with_flag = create_args(parse(&[
        "key", "create", "--org", "org_1", "--name", "agent", "--scopes", "write",
    ]));
    assert_eq!(with_flag.scope_names(), vec!["write"]);
}

#[test]
fn scopes_default_to_empty_so_the_server_decides() {
    let args = create_args(parse(&["key", "create", "--org", "o", "--name", "n"]));
    assert!(args.scope_names().is_empty());
    assert_eq!(args.expires_in, None);
}

#[test]
fn scopes_are_deduplicated_and_validated() {
    let args = create_args(parse(&[
        "key",
        "create",
        "--org",
        "o",
        "--name",
        "n",
        "--scopes",
        "read,write,read",
    ]));
    assert_eq!(args.scope_names(), vec!["read", "write"]);
    let err = parse_err(&[
        "key", "create", "--org", "o", "--name", "n", "--scopes", "delete",
    ]);
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn expires_in_is_parsed_with_humantime() {
    let args = create_args(parse(&[
        "key",
        "create",
        "--org",
        "o",
        "--name",
        "n",
        "--expires-in",
        "30d",
    ]));
    assert_eq!(args.expires_in, Some(2_592_000));
    assert_eq!(parse_expires_in("12h"), Ok(43_200));
    assert_eq!(parse_expires_in("1h 30m"), Ok(5_400));
    assert!(parse_expires_in("0s").is_err());
    assert!(parse_expires_in("soon").is_err());
    let err = parse_err(&[
        "key",
        "create",
        "--org",
        "o",
        "--name",
        "n",
        "--expires-in",
        "x",
    ]);
    assert_eq!(err.kind(), ErrorKind::ValueValidation);
}

#[test]
fn global_flags_work_after_the_subcommand() {
    let cli = parse(&[
        "org",
        "list",
        "--output",
        "json",
        "--server",
        "http://cp:9200",
        "--token",
        "t",
        "--timeout",
        "3",
    ]);
    assert_eq!(cli.global.output, OutputFormat::Json);
    assert_eq!(cli.global.server.as_deref(), Some("http://cp:9200"));
    assert_eq!(cli.global.token.as_deref(), Some("t"));
    assert_eq!(cli.global.timeout(), Duration::from_secs(3));
    assert!(matches!(cli.command, Command::Org(OrgCommand::List)));
}

#[test]
fn output_format_defaults_to_table_and_rejects_others() {
    let cli = parse(&["keygen", "master"]);
    assert_eq!(cli.global.output, OutputFormat::Table);
    assert_eq!(cli.global.timeout, 10);
    assert!(cli.global.server.is_none() && cli.global.token.is_none());
    assert!(matches!(
        cli.command,
        Command::Keygen(KeygenCommand::Master)
    ));
    assert_eq!(
        parse(&["-o", "json", "keys", "status"]).global.output,
        OutputFormat::Json
    );
    assert_eq!(
        parse_err(&["--output", "yaml", "org", "list"]).kind(),
        ErrorKind::InvalidValue
    );
    assert_eq!(parse_err(&["--timeout", "0", "org", "list"]).exit_code(), 2);
}

#[test]
fn add_arc_takes_the_original_flags() {
    let cli = parse(&[
        "org",
        "add-arc",
        "org_1",
        "--url",
        "http://arc:8000",
        "--database",
        "mem",
        "--api-key",
        "k",
        "--measurement",
        "events",
        "--replace",
    ]);
    let Command::Org(OrgCommand::AddArc(args)) = cli.command else {
        panic!("expected org add-arc");
    };
    assert_eq!(args.org_id, "org_1");
    assert_eq!(args.url, "http://arc:8000");
    assert_eq!(args.database, "mem");
    assert_eq!(args.api_key.as_deref(), Some("k"));
    assert_eq!(args.measurement.as_deref(), Some("events"));
    assert!(args.replace);
    assert_eq!(
        parse_err(&["org", "add-arc", "org_1", "--url", "http://arc"]).kind(),
        ErrorKind::MissingRequiredArgument
    );
}

#[test]
fn key_list_all_and_revoke() {
    let cli = parse(&["key", "list", "--org", "org_1", "--all"]);
    assert!(matches!(
        cli.command,
        Command::Key(KeyCommand::List { ref org, all: true }) if org == "org_1"
    ));
    let cli = parse(&["key", "revoke", "key_1"]);
    assert!(
        matches!(cli.command, Command::Key(KeyCommand::Revoke { ref key_id }) if key_id == "key_1")
    );
    assert!(matches!(
        parse(&["master-key", "rotate"]).command,
        Command::MasterKey(MasterKeyCommand::Rotate)
    ));
    // the former names keep working
    assert!(matches!(
        parse(&["keys", "rotate-master"]).command,
        Command::MasterKey(MasterKeyCommand::Rotate)
    ));
}

#[test]
fn admin_token_create_needs_a_role_and_takes_an_expiry() {
    let cli = parse(&[
        "admin-token",
        "create",
        "--name",
        "ci",
        "--role",
        "reader",
        "--expires-in",
        "12h",
    ]);
    match cli.command {
        Command::AdminToken(AdminTokenCommand::Create(args)) => {
            assert_eq!(
                (args.name.as_str(), args.role, args.expires_in),
                ("ci", Role::Reader, Some(12 * 3600))
            );
        }
        other => panic!("expected admin-token create, got {other:?}"),
    }
    assert_eq!(
        parse_err(&["admin-token", "create", "--name", "ci"]).kind(),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        parse_err(&["admin-token", "create", "--name", "ci", "--role", "root"]).kind(),
        ErrorKind::InvalidValue
    );
}

#[test]
fn admin_token_list_all_and_revoke_with_force() {
    assert!(matches!(
        parse(&["admin-token", "list", "--all"]).command,
        Command::AdminToken(AdminTokenCommand::List { all: true })
    ));
    let cli = parse(&["admin-token", "revoke", "adm_1", "--force"]);
    assert!(matches!(
        cli.command,
        Command::AdminToken(AdminTokenCommand::Revoke { ref token_id, force: true }) if token_id == "adm_1"
    ));
    assert!(matches!(
        parse(&["admin-token", "revoke", "adm_1"]).command,
        Command::AdminToken(AdminTokenCommand::Revoke { force: false, .. })
    ));
}
