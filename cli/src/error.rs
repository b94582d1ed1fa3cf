//! Turning failures into one `error: …` line plus an optional `hint: …`.
//!
//! gRPC statuses are mapped here, once: transport failures name the address
//! that could not be reached, auth failures point at the token, not-found
//! failures and malformed ids point at the command that lists valid ids.
//! The control plane's messages say what is wrong and the rule broken; the
//! commands to run are suggested here only (the admin API has other clients).

use crate::args::{CA_FILE_ENV, SERVER_ENV, TOKEN_ENV};
use std::error::Error as StdError;
use std::fmt;
use std::io::Write;
use std::time::Duration;
use tonic::{Code, Status};

/// A failure with the message an operator reads and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    message: String,
    hint: Option<String>,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for CliError {}

/// The error for a command that needs the server but has no token.
pub fn no_token() -> CliError {
    CliError::new("no admin token").with_hint(format!(
        "set {TOKEN_ENV} or pass --token-file PATH (the control plane printed one on first start, \
         or set MEMTRACE_BOOTSTRAP_ADMIN_TOKEN)"
    ))
}

/// What a NOT_FOUND answer most likely refers to, to point at the right listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// An org id given on the command line.
    Org,
    /// An org's arc binding (or the org itself).
    ArcBinding,
    /// An api key id given on the command line.
    Key,
    /// An admin token id given on the command line.
    AdminToken,
    /// A runtime setting key (and maybe an org).
    Setting,
    /// An audit entry's sequence number.
    AuditEntry,
    /// Nothing addressed by id.
    None,
}

/// Where the call went, for messages.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub server: String,
    pub timeout: Duration,
    /// `--ca-file` or its variable, when a CA was given for `https://`.
    pub ca_origin: Option<&'static str>,
}

/// Maps a failed call to what the operator reads.
pub fn from_status(status: &Status, ctx: &CallContext, subject: Subject) -> CliError {
    let server = &ctx.server;
    if is_timeout(status) {
        return CliError::new(format!(
            "the control plane at {server} did not answer within {}s",
            ctx.timeout.as_secs()
        ))
        .with_hint("raise --timeout, or check the control plane's log");
    }
    // A status with a source was made by the client from a transport error; one
    // received from the server never carries a source.
    if StdError::source(status).is_some() {
        return unreachable(ctx, &transport_cause(status));
    }
    let message = one_line(status.message());
    let message = if message.is_empty() {
        code_text(status.code()).to_owned()
    } else {
        message
    };
    let error = CliError::new(message.clone());
    match status.code() {
        Code::Unavailable => unreachable(ctx, &message),
        Code::Unauthenticated => error.with_hint(format!(
            "pass a valid admin token with {TOKEN_ENV} or --token-file"
        )),
        // the server names the role and the role the call needs
        Code::PermissionDenied if message.contains("needs role") => error.with_hint(
            "this admin token may only make calls that change nothing; use an admin-role token \
             (an admin creates one with 'memtracectl admin-token create --name NAME --role admin')",
        ),
        Code::PermissionDenied if subject == Subject::Setting => error.with_hint(
            "locked settings are listed in [control_plane] locked_settings \
             (MEMTRACE_CONTROL_PLANE_LOCKED_SETTINGS); change that list and restart to unlock",
        ),
        Code::PermissionDenied => error.with_hint(
            "api keys (mtk_…) cannot be used as admin tokens; pass an admin token (mta_…) \
             with MEMTRACE_ADMIN_TOKEN or --token-file",
        ),
        // the server names the field first: "invalid org_id: …"
        Code::InvalidArgument if message.starts_with("invalid org_id") => {
            error.with_hint("run 'memtracectl org list' to see org ids")
        }
        Code::InvalidArgument if message.starts_with("invalid key_id") => {
            error.with_hint("run 'memtracectl key list --org ORG_ID' to see key ids")
        }
        Code::InvalidArgument if message.starts_with("invalid token_id") => {
            error.with_hint("run 'memtracectl admin-token list --all' to see admin token ids")
        }
        Code::InvalidArgument if message.starts_with("invalid url") && message.contains("api_key") => {
            error.with_hint(
                "pass the Arc token with --api-key-file PATH (- for stdin) or --api-key, not in the url",
            )
        }
        // "audit entry N changed sensitive setting KEY, …"
        Code::FailedPrecondition
            if subject == Subject::AuditEntry && message.contains("sensitive setting") =>
        {
            let key = message
                .split("sensitive setting ")
                .nth(1)
                .and_then(|rest| rest.split([',', ' ']).next())
                .filter(|key| !key.is_empty())
                .unwrap_or("KEY");
            error.with_hint(format!("set it again with 'memtracectl config set {key} VALUE'"))
        }
        Code::FailedPrecondition if subject == Subject::AdminToken => error.with_hint(
            "create another admin-role token first ('memtracectl admin-token create --name NAME \
             --role admin'), or pass --force to revoke it anyway",
        ),
        Code::NotFound => match subject {
            Subject::Org => error.with_hint("run 'memtracectl org list' to see org ids"),
            Subject::ArcBinding => error.with_hint(
                "run 'memtracectl org list' to see org ids; bind an arc with \
                 'memtracectl org add-arc ORG_ID --url URL --database DB'",
            ),
            Subject::Key => {
                error.with_hint("run 'memtracectl key list --org ORG_ID' to see key ids")
            }
            Subject::AdminToken => {
                error.with_hint("run 'memtracectl admin-token list --all' to see admin token ids")
            }
            Subject::Setting => error.with_hint(
                "run 'memtracectl config list' to see setting keys (and 'memtracectl org list' for org ids)",
            ),
            Subject::AuditEntry => {
                error.with_hint("run 'memtracectl config audit' to see config change entries")
            }
            Subject::None => error,
        },
        Code::AlreadyExists if subject == Subject::ArcBinding => {
            error.with_hint("pass --replace to replace the existing binding")
        }
        Code::Unimplemented => CliError::new(format!(
            "the server at {server} does not implement this call ({message})"
        ))
        .with_hint(format!(
            "is --server pointing at memtrace-control-plane? set --server or {SERVER_ENV}"
        )),
        Code::Internal | Code::Unknown | Code::DataLoss => {
            error.with_hint("see the control plane's log for details")
        }
        _ => error,
    }
}

/// Maps a failed connection attempt.
pub fn from_connect(err: &tonic::transport::Error, ctx: &CallContext) -> CliError {
    let mut cause = transport_cause(err);
    if cause.contains("timed out") || cause.contains("elapsed") {
        cause = format!("no answer within {}s", ctx.timeout.as_secs());
    }
    unreachable(ctx, &cause)
}

fn unreachable(ctx: &CallContext, cause: &str) -> CliError {
    let server = &ctx.server;
    let message = if cause.is_empty() {
        format!("cannot reach the control plane at {server}")
    } else {
        format!("cannot reach the control plane at {server} ({cause})")
    };
    CliError::new(message).with_hint(connect_hint(ctx, cause))
}

/// What to check when a connection failed: the CA when the certificate was
/// not trusted, the scheme when TLS met plaintext, else the address.
fn connect_hint(ctx: &CallContext, cause: &str) -> String {
    let https = ctx.server.starts_with("https://");
    if https && cause.contains("certificate") {
        return match ctx.ca_origin {
            Some(origin) => format!(
                "the control plane's certificate is not signed by the CA in {origin}, or not issued for this host name"
            ),
            None => format!(
                "the control plane's certificate is not trusted: pass the CA that signed it with --ca-file or {CA_FILE_ENV}"
            ),
        };
    }
    if https && (cause.contains("corrupt message") || cause.contains("InvalidContentType")) {
        return format!(
            "the control plane at {} answered in plaintext: use http://, or configure its [control_plane] tls_cert_file and tls_key_file",
            ctx.server
        );
    }
    format!(
        "is memtrace-control-plane running{}? set --server or {SERVER_ENV}",
        if https {
            ""
        } else {
            " and serving plaintext (use https:// if it serves TLS)"
        }
    )
}

fn is_timeout(status: &Status) -> bool {
    if status.code() == Code::DeadlineExceeded {
        return true;
    }
    let mut source = StdError::source(status);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    status.code() == Code::Cancelled && status.message() == "Timeout expired"
}

/// The most specific message in an error's source chain, e.g. `connection
/// refused (os error 111)` rather than `transport error`.
fn transport_cause(err: &(dyn StdError + 'static)) -> String {
    let mut best = String::new();
    let mut current = Some(err);
    while let Some(err) = current {
        let text = one_line(&err.to_string());
        let generic = matches!(
            text.as_str(),
            "" | "transport error" | "error trying to connect" | "client error (Connect)"
        );
        if !generic {
            best = text;
        }
        current = err.source();
    }
    lowercase_first(&best)
}

fn code_text(code: Code) -> &'static str {
    match code {
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission denied",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::InvalidArgument => "invalid argument",
        Code::FailedPrecondition => "failed precondition",
        Code::Unavailable => "unavailable",
        Code::Unimplemented => "unimplemented",
        _ => "the control plane failed the call",
    }
}

/// Collapses whitespace (including newlines) so a message stays on one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Writes `error: <cause>` and, when known, an indented `hint: …` line.
pub fn report(err: &anyhow::Error, w: &mut dyn Write) {
    let hint = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<CliError>())
        .and_then(CliError::hint);
    // Best effort: there is nowhere left to report a failing stderr.
    let _ = writeln!(w, "error: {}", one_line(&format!("{err:#}")));
    if let Some(hint) = hint {
        let _ = writeln!(w, "  hint: {hint}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn ctx() -> CallContext {
        CallContext {
            server: "http://127.0.0.1:9200".into(),
            timeout: Duration::from_secs(10),
            ca_origin: None,
        }
    }

    #[test]
    fn unavailable_names_the_address_and_the_variable() {
        let err = from_status(
            &Status::unavailable("connection refused"),
            &ctx(),
            Subject::Org,
        );
        assert!(
            err.message()
                .starts_with("cannot reach the control plane at http://127.0.0.1:9200")
        );
        let hint = err.hint().unwrap();
        assert!(hint.contains("MEMTRACE_CONTROL_PLANE_URL"));
        assert!(hint.contains("--server"));
    }

    #[test]
    fn client_side_transport_errors_are_unreachable() {
        let io = io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let status = Status::from_error(Box::new(io));
        let err = from_status(&status, &ctx(), Subject::None);
        assert_eq!(
            err.message(),
            "cannot reach the control plane at http://127.0.0.1:9200 (connection refused (os error 111))"
        );
    }

    #[test]
    fn tls_failures_point_at_the_ca_or_the_scheme() {
        let mut ctx = ctx();
        ctx.server = "https://cp:9200".into();
        let untrusted = || {
            Status::from_error(Box::new(io::Error::other(
                "invalid peer certificate: UnknownIssuer",
            )))
        };
        let err = from_status(&untrusted(), &ctx, Subject::None);
        assert!(
            err.hint()
                .unwrap()
                .contains("--ca-file or MEMTRACE_CONTROL_PLANE_CA_FILE"),
            "{err:?}"
        );
        ctx.ca_origin = Some("--ca-file");
        let err = from_status(&untrusted(), &ctx, Subject::None);
        assert!(
            err.hint()
                .unwrap()
                .contains("not signed by the CA in --ca-file"),
            "{err:?}"
        );
        let plaintext = Status::from_error(Box::new(io::Error::other(
            "received corrupt message of type InvalidContentType",
        )));
        let err = from_status(&plaintext, &ctx, Subject::None);
        assert!(
            err.hint().unwrap().contains("answered in plaintext"),
            "{err:?}"
        );
    }

    #[test]
    fn timeouts_name_the_limit() {
        let status = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        let err = from_status(&status, &ctx(), Subject::None);
        assert!(err.message().contains("did not answer within 10s"), "{err}");
        assert!(err.hint().unwrap().contains("--timeout"));
        let err = from_status(
            &Status::deadline_exceeded("deadline"),
            &ctx(),
            Subject::None,
        );
        assert!(err.message().contains("did not answer"));
    }

    #[test]
    fn auth_failures_point_at_the_token() {
        let err = from_status(
            &Status::unauthenticated("invalid admin token"),
            &ctx(),
            Subject::None,
        );
        assert_eq!(err.message(), "invalid admin token");
        assert!(err.hint().unwrap().contains("MEMTRACE_ADMIN_TOKEN"));
        let err = from_status(
            &Status::permission_denied("api keys cannot call the admin api"),
            &ctx(),
            Subject::None,
        );
        assert!(err.hint().unwrap().contains("mtk_"));
    }

    #[test]
    fn transport_neutral_server_messages_get_the_cli_hint() {
        let sensitive = from_status(
            &Status::failed_precondition(
                "audit entry 7 changed sensitive setting telemetry.otlp_headers, whose values \
                 the audit trail does not keep, so it cannot be rolled back; set a new value \
                 of telemetry.otlp_headers instead",
            ),
            &ctx(),
            Subject::AuditEntry,
        );
        assert_eq!(
            sensitive.hint(),
            Some("set it again with 'memtracectl config set telemetry.otlp_headers VALUE'")
        );
        let url = from_status(
            &Status::invalid_argument(
                "invalid url: must not carry credentials; send the Arc token in the api_key \
                 field, which is stored encrypted",
            ),
            &ctx(),
            Subject::Org,
        );
        assert!(url.hint().unwrap().contains("--api-key-file"), "{url:?}");
    }

    #[test]
    fn admin_token_refusals_point_at_what_to_do() {
        let reader = from_status(
            &Status::permission_denied(
                "admin token adm_0123456789abcdef has role reader, which may not call \
                 memtrace.admin.v1.OrgService/CreateOrg (needs role admin)",
            ),
            &ctx(),
            Subject::Org,
        );
        assert!(reader.message().contains("has role reader"));
        assert!(
            reader
                .hint()
                .unwrap()
                .contains("memtracectl admin-token create --name NAME --role admin")
        );
        let locked = from_status(
            &Status::permission_denied(
                "admin token adm_x has role reader, which may not call x (needs role admin)",
            ),
            &ctx(),
            Subject::Setting,
        );
        assert!(
            locked.hint().unwrap().contains("--role admin"),
            "the role, not the lock"
        );
        let last = from_status(
            &Status::failed_precondition("admin token adm_x is the last active admin-role token"),
            &ctx(),
            Subject::AdminToken,
        );
        assert!(last.hint().unwrap().contains("--force"));
        let missing = from_status(
            &Status::not_found("admin token adm_x not found"),
            &ctx(),
            Subject::AdminToken,
        );
        assert!(
            missing
                .hint()
                .unwrap()
                .contains("memtracectl admin-token list")
        );
        let malformed = from_status(
            &Status::invalid_argument("invalid token_id: \"x\" is not an admin token id"),
            &ctx(),
            Subject::AdminToken,
        );
        assert!(
            malformed
                .hint()
                .unwrap()
                .contains("memtracectl admin-token list")
        );
    }

    #[test]
    fn not_found_points_at_the_listing() {
        let org = from_status(
            &Status::not_found("org org_x not found"),
            &ctx(),
            Subject::Org,
        );
        assert_eq!(org.message(), "org org_x not found");
        assert!(org.hint().unwrap().contains("memtracectl org list"));
        let key = from_status(&Status::not_found("key not found"), &ctx(), Subject::Key);
        assert!(key.hint().unwrap().contains("memtracectl key list --org"));
        let arc = from_status(
            &Status::already_exists("bound"),
            &ctx(),
            Subject::ArcBinding,
        );
        assert!(arc.hint().unwrap().contains("--replace"));
    }

    #[test]
    fn malformed_ids_point_at_the_listing() {
        let org = from_status(
            &Status::invalid_argument(
                "invalid org_id: \"x\" is not an org id (org_ followed by letters, digits or _)",
            ),
            &ctx(),
            Subject::Org,
        );
        assert!(org.hint().unwrap().contains("memtracectl org list"));
        let key = from_status(
            &Status::invalid_argument("invalid key_id: \"k\" is not an api key id"),
            &ctx(),
            Subject::Key,
        );
        assert!(key.hint().unwrap().contains("memtracectl key list --org"));
        let name = from_status(
            &Status::invalid_argument("invalid name: must not be empty"),
            &ctx(),
            Subject::Org,
        );
        assert_eq!(
            name.hint(),
            None,
            "other invalid fields get no listing hint"
        );
    }

    #[test]
    fn messages_stay_on_one_line() {
        let err = from_status(
            &Status::invalid_argument("bad\nname\t here"),
            &ctx(),
            Subject::None,
        );
        assert_eq!(err.message(), "bad name here");
        assert_eq!(err.hint(), None);
        let empty = from_status(&Status::invalid_argument(""), &ctx(), Subject::None);
        assert_eq!(empty.message(), "invalid argument");
    }

    #[test]
    fn report_prints_error_and_hint() {
        let mut buf = Vec::new();
        report(&anyhow::Error::new(no_token()), &mut buf);
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "error: no admin token");
        assert!(lines[1].starts_with("  hint: set MEMTRACE_ADMIN_TOKEN or pass --token-file PATH"));
        assert_eq!(lines.len(), 2);

        let mut buf = Vec::new();
        report(&anyhow::anyhow!("plain\nfailure"), &mut buf);
        assert_eq!(String::from_utf8(buf).unwrap(), "error: plain failure\n");
    }
}
