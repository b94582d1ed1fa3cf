//! `memtracectl erasure …`: the keys that sign erasure receipts, and the
//! offline verification of a receipt.
//!
//! `verify` contacts no server: it checks the receipt's signature against
//! the public key the receipt embeds and, with `--keys`, that this key is
//! one of a trusted set (what `erasure keys --output json` printed).

use crate::client::Admin;
use crate::error::{CliError, Subject};
use crate::output::{Output, Render, fields, table};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use memtrace_common::receipt::{self, KeySet, PublicKeyInfo, VerifiedReceipt};
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

/// `erasure keys`.
pub(super) async fn keys(admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    let keys = admin
        .master_keys()
        .list_receipt_keys(admin.request(pb::ListReceiptKeysRequest {}))
        .await
        .map_err(|s| admin.fail(s, Subject::None))?
        .into_inner();
    out.emit(&KeysView(KeySet {
        keys: keys.keys.into_iter().map(key_info).collect(),
    }))
}

/// `erasure rotate-key`.
pub(super) async fn rotate_key(admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    let key = admin
        .master_keys()
        .rotate_receipt_key(admin.request(pb::RotateReceiptKeyRequest {}))
        .await
        .map_err(|s| admin.fail(s, Subject::None))?
        .into_inner();
    out.emit(&RotatedView(
        key_info(key),
        "receipt signing key",
        "older keys are retired and still verify",
    ))
}

/// `erasure verify`: reads, verifies, reports. `stdin` is read for `-`.
pub fn verify(
    receipt_path: &Path,
    keys_path: Option<&Path>,
    stdin: &mut dyn Read,
    out: &mut Output<'_>,
) -> anyhow::Result<()> {
    let document = if receipt_path == Path::new("-") {
        let mut buf = Vec::new();
        stdin
            .read_to_end(&mut buf)
            .map_err(|e| CliError::new(format!("cannot read the receipt from stdin: {e}")))?;
        buf
    } else {
        std::fs::read(receipt_path).map_err(|e| {
            CliError::new(format!(
                "cannot read receipt {}: {e}",
                receipt_path.display()
            ))
        })?
    };
    let trusted = keys_path
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::new(format!("cannot read keys {}: {e}", path.display())))?;
            KeySet::from_json(&text).map_err(|e| {
                CliError::new(format!("keys {}: {e}", path.display()))
                    .with_hint("pass the output of 'memtracectl erasure keys --output json'")
            })
        })
        .transpose()?;
    match receipt::verify(&document, trusted.as_ref()) {
        Ok(verified) => out.emit(&VerifiedView::from(verified)),
        Err(error) => {
            out.emit(&FailedView {
                verified: false,
                failed_check: error.check(),
                reason: error.to_string(),
            })?;
            let hint = match error.check() {
                "trusted_key" => {
                    "the signature is intact but the key is not one you trust: compare it with \
                     'memtracectl erasure keys' of the control plane that issued the receipt"
                }
                "signature" => "do not trust this receipt's content",
                _ => "is this a receipt document as the control plane issued it?",
            };
            Err(CliError::new(format!(
                "receipt verification failed ({} check): {error}",
                error.check()
            ))
            .with_hint(hint)
            .into())
        }
    }
}

fn timestamp(ts: Option<prost_types::Timestamp>) -> Option<jiff::Timestamp> {
    let ts = ts?;
    jiff::Timestamp::new(ts.seconds, ts.nanos).ok()
}

pub(crate) fn key_info(key: pb::ReceiptKey) -> PublicKeyInfo {
    PublicKeyInfo {
        fingerprint: receipt::fingerprint(&key.public_key),
        public_key: STANDARD.encode(&key.public_key),
        key_id: key.key_id,
        algorithm: key.algorithm,
        created_at: timestamp(key.created_at),
        retired_at: timestamp(key.retired_at),
    }
}

fn shown(ts: Option<jiff::Timestamp>) -> String {
    ts.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

/// `erasure keys` result: in json, a key set `verify --keys` reads.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct KeysView(pub KeySet);

impl Render for KeysView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.0.keys.is_empty() {
            return writeln!(w, "no receipt signing keys yet (one is created at start)");
        }
        let rows: Vec<Vec<String>> = self
            .0
            .keys
            .iter()
            .map(|k| {
                vec![
                    k.key_id.clone(),
                    if k.retired_at.is_some() {
                        "retired"
                    } else {
                        "signing"
                    }
                    .to_owned(),
                    k.fingerprint.clone(),
                    shown(k.created_at),
                    shown(k.retired_at),
                    k.public_key.clone(),
                ]
            })
            .collect();
        table(
            w,
            &[
                "key id",
                "state",
                "fingerprint",
                "created",
                "retired",
                "public key",
            ],
            &rows,
        )
    }
}

/// `erasure rotate-key` result.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct RotatedView(
    pub PublicKeyInfo,
    /// What the key signs ("receipt signing key").
    #[serde(skip)]
    pub &'static str,
    /// What becomes of the older keys.
    #[serde(skip)]
    pub &'static str,
);

impl Render for RotatedView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "{} {} ({}) signs from now on; {}",
            self.1, self.0.key_id, self.0.fingerprint, self.2
        )
    }
}

/// `erasure verify` result when every check passed.
#[derive(Debug, Serialize)]
pub struct VerifiedView {
    pub verified: bool,
    pub receipt_id: String,
    pub erasure_id: String,
    pub org_id: String,
    pub rows_removed: BTreeMap<String, u64>,
    pub finished_at: String,
    pub key_id: String,
    pub fingerprint: String,
    /// Whether the key was checked against `--keys`.
    pub key_trusted: bool,
}

impl From<VerifiedReceipt> for VerifiedView {
    fn from(v: VerifiedReceipt) -> Self {
        Self {
            verified: true,
            receipt_id: v.receipt.receipt_id,
            erasure_id: v.receipt.erasure_id,
            org_id: v.receipt.org_id,
            rows_removed: v.receipt.rows_removed,
            finished_at: v.receipt.finished_at.to_string(),
            key_id: v.key_id,
            fingerprint: v.fingerprint,
            key_trusted: v.trusted,
        }
    }
}

impl Render for VerifiedView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let rows = if self.rows_removed.is_empty() {
            "none".to_owned()
        } else {
            self.rows_removed
                .iter()
                .map(|(table, n)| format!("{table}={n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let key = if self.key_trusted {
            "one of the trusted keys (--keys)"
        } else {
            "the key embedded in the receipt (not checked against trusted keys: pass --keys)"
        };
        writeln!(w, "signature valid")?;
        fields(
            w,
            &[
                ("receipt", self.receipt_id.clone()),
                ("erasure", self.erasure_id.clone()),
                ("org", self.org_id.clone()),
                ("rows removed", rows),
                ("finished", self.finished_at.clone()),
                ("key", format!("{} {}", self.key_id, self.fingerprint)),
                ("signed by", key.to_owned()),
            ],
        )
    }
}

/// `erasure verify --output json` when a check failed (the command exits 1).
#[derive(Debug, Serialize)]
pub struct FailedView {
    pub verified: bool,
    pub failed_check: &'static str,
    pub reason: String,
}

impl Render for FailedView {
    fn table(&self, _w: &mut dyn Write) -> io::Result<()> {
        // the one-line reason is the error on stderr
        Ok(())
    }
}
