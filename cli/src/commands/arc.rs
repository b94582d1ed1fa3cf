//! `memtracectl org add-arc | show-arc | remove-arc | test-arc`: the arc
//! instance bound to an org. The arc api key goes in once and only its masked
//! form ever comes back.

use super::org::AddArcArgs;
use crate::args::OutputFormat;
use crate::client::Admin;
use crate::error::{CliError, Subject, one_line};
use crate::output::{Output, Render, cell, fields, rfc3339};
use crate::secret;
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use std::io::{self, Write};
use zeroize::Zeroizing;

pub async fn add(args: AddArcArgs, admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    let api_key = api_key(&args, admin, out)?;
    let request = pb::BindArcRequest {
        org_id: args.org_id,
        url: args.url,
        database: args.database,
        api_key: api_key.to_string(),
        measurement: args.measurement.unwrap_or_default(),
        replace: args.replace,
    };
    let binding = admin
        .arc_bindings()
        .bind_arc(admin.request(request))
        .await
        .map_err(|s| admin.fail(s, Subject::ArcBinding))?
        .into_inner();
    out.emit(&ArcBindingView::from(&binding))
}

/// The arc api key: from `--api-key-file` (`-`: stdin), or from
/// `--api-key` with a warning that argv is visible; empty when neither.
fn api_key(
    args: &AddArcArgs,
    admin: &Admin,
    out: &mut Output<'_>,
) -> anyhow::Result<Zeroizing<String>> {
    if let Some(path) = &args.api_key_file {
        if secret::is_stdin(path) && admin.token_read_stdin() {
            return Err(
                CliError::new("--api-key-file - and --token-file - both read stdin")
                    .with_hint(
                        "pass one of them as a file, or the admin token in MEMTRACE_ADMIN_TOKEN",
                    )
                    .into(),
            );
        }
        return Ok(secret::read("--api-key-file", path, &mut std::io::stdin())?);
    }
    let Some(key) = &args.api_key else {
        return Ok(Zeroizing::default());
    };
    out.note(&secret::argv_warning(
        "--api-key",
        "arc api key",
        "pass --api-key-file PATH (- for stdin)",
    ))?;
    Ok(Zeroizing::new(key.clone()))
}

pub async fn show(org_id: String, admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    let binding = admin
        .arc_bindings()
        .get_arc_binding(admin.request(pb::GetArcBindingRequest { org_id }))
        .await
        .map_err(|s| admin.fail(s, Subject::ArcBinding))?
        .into_inner();
    out.emit(&ArcBindingView::from(&binding))
}

pub async fn remove(org_id: String, admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    let removed = admin
        .arc_bindings()
        .remove_arc_binding(admin.request(pb::RemoveArcBindingRequest { org_id }))
        .await
        .map_err(|s| admin.fail(s, Subject::ArcBinding))?
        .into_inner();
    out.emit(&RemovedArcView {
        org_id: removed.org_id,
    })
}

pub async fn test(org_id: String, admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    let result = admin
        .arc_bindings()
        .test_arc_binding(admin.request(pb::TestArcBindingRequest {
            org_id: org_id.clone(),
        }))
        .await
        .map_err(|s| admin.fail(s, Subject::ArcBinding))?
        .into_inner();
    let view = ArcTestView {
        org_id,
        reachable: result.reachable,
        http_status: result.http_status,
        latency_ms: result.latency_ms,
        detail: result.detail,
    };
    if view.reachable {
        return out.emit(&view);
    }
    // Scripts in json mode still get the document; the exit code says it failed.
    if out.format == OutputFormat::Json {
        out.emit(&view)?;
    }
    Err(view.failure().into())
}

/// An arc binding, as `org add-arc` and `org show-arc`. Never the api key itself.
#[derive(Debug, Serialize)]
pub struct ArcBindingView {
    pub id: String,
    pub org_id: String,
    pub url: String,
    pub database: String,
    pub measurement: String,
    /// `None` when the binding has no api key.
    pub api_key_masked: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<&pb::ArcBinding> for ArcBindingView {
    fn from(binding: &pb::ArcBinding) -> Self {
        Self {
            id: binding.id.clone(),
            org_id: binding.org_id.clone(),
            url: binding.url.clone(),
            database: binding.database.clone(),
            measurement: binding.measurement.clone(),
            api_key_masked: Some(binding.api_key_masked.clone()).filter(|k| !k.is_empty()),
            created_at: rfc3339(binding.created_at.as_ref()),
            updated_at: rfc3339(binding.updated_at.as_ref()),
        }
    }
}

impl Render for ArcBindingView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        fields(
            w,
            &[
                ("id", self.id.clone()),
                ("org", self.org_id.clone()),
                ("url", self.url.clone()),
                ("database", self.database.clone()),
                ("measurement", self.measurement.clone()),
                ("api key", cell(&self.api_key_masked, "(none)")),
                ("created", cell(&self.created_at, "-")),
                ("updated", cell(&self.updated_at, "-")),
            ],
        )
    }
}

/// `org remove-arc` result.
#[derive(Debug, Serialize)]
pub struct RemovedArcView {
    pub org_id: String,
}

impl Render for RemovedArcView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "removed the arc binding of org {}", self.org_id)
    }
}

/// `org test-arc` result.
#[derive(Debug, Serialize)]
pub struct ArcTestView {
    pub org_id: String,
    pub reachable: bool,
    /// HTTP status of arc's `/health`, 0 when no response arrived.
    pub http_status: u32,
    pub latency_ms: u64,
    pub detail: String,
}

impl ArcTestView {
    fn failure(&self) -> CliError {
        let mut message = format!("the arc of org {} is not reachable", self.org_id);
        if self.http_status != 0 {
            message.push_str(&format!(" (http {})", self.http_status));
        }
        let detail = one_line(&self.detail);
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(&detail);
        }
        CliError::new(message).with_hint(format!(
            "check the binding with 'memtracectl org show-arc {}' and that arc is up; \
             rebind with 'memtracectl org add-arc {} --url URL --database DB --replace'",
            self.org_id, self.org_id
        ))
    }
}

impl Render for ArcTestView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "the arc of org {} is reachable (http {}, {} ms)",
            self.org_id, self.http_status, self.latency_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    #[test]
    fn arc_binding_json_masks_and_nulls() {
        let binding = pb::ArcBinding {
            id: "arc_1".into(),
            org_id: "org_1".into(),
            url: "http://arc:8000".into(),
            database: "mem".into(),
            measurement: "events".into(),
            api_key_masked: String::new(),
            created_at: Some(Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            updated_at: None,
        };
        let json = serde_json::to_value(ArcBindingView::from(&binding)).unwrap();
        assert_eq!(json["api_key_masked"], serde_json::Value::Null);
        assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["updated_at"], serde_json::Value::Null);
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "id",
            "org_id",
            "url",
            "database",
            "measurement",
            "api_key_masked",
            "created_at",
            "updated_at",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn failed_arc_test_is_one_line_with_status() {
        let view = ArcTestView {
            org_id: "org_1".into(),
            reachable: false,
            http_status: 503,
            latency_ms: 4,
            detail: "service\nunavailable".into(),
        };
        let err = view.failure();
        assert_eq!(
            err.message(),
            "the arc of org org_1 is not reachable (http 503): service unavailable"
        );
        assert!(err.hint().unwrap().contains("org show-arc org_1"));
    }
}
