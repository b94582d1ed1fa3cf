//! `memtracectl master-key …` (alias `keys`): the master key ring of the
//! control plane.

use crate::client::Admin;
use crate::error::Subject;
use crate::output::{Output, Render, table, yes_no};
use clap::Subcommand;
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use std::io::{self, Write};

#[derive(Debug, Subcommand)]
pub enum MasterKeyCommand {
    /// show the master key versions and how many records each wraps
    Status,
    /// rewrap every data key with the active master key
    #[command(alias = "rotate-master")]
    Rotate,
}

pub async fn run(
    command: MasterKeyCommand,
    admin: &Admin,
    out: &mut Output<'_>,
) -> anyhow::Result<()> {
    match command {
        MasterKeyCommand::Status => {
            let status = admin
                .master_keys()
                .get_keyring_status(admin.request(pb::GetKeyringStatusRequest {}))
                .await
                .map_err(|s| admin.fail(s, Subject::None))?
                .into_inner();
            out.emit(&KeyringView::from(&status))
        }
        MasterKeyCommand::Rotate => {
            let rotated = admin
                .master_keys()
                .rotate_master(admin.request(pb::RotateMasterRequest {}))
                .await
                .map_err(|s| admin.fail(s, Subject::None))?
                .into_inner();
            out.emit(&RotationView {
                active_kek_id: rotated.active_kek_id,
                rewrapped: rotated.rewrapped,
                already_current: rotated.already_current,
            })
        }
    }
}

/// `master-key status` result.
#[derive(Debug, Serialize)]
pub struct KeyringView {
    pub versions: Vec<MasterKeyView>,
}

/// One master key version: its public fingerprint, never the key.
#[derive(Debug, Serialize)]
pub struct MasterKeyView {
    pub kek_id: String,
    pub active: bool,
    pub loaded: bool,
    pub records: u64,
}

impl From<&pb::KeyringStatus> for KeyringView {
    fn from(status: &pb::KeyringStatus) -> Self {
        Self {
            versions: status
                .versions
                .iter()
                .map(|v| MasterKeyView {
                    kek_id: v.kek_id.clone(),
                    active: v.active,
                    loaded: v.loaded,
                    records: v.records,
                })
                .collect(),
        }
    }
}

impl Render for KeyringView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.versions.is_empty() {
            return writeln!(w, "no master keys");
        }
        let rows: Vec<Vec<String>> = self
            .versions
            .iter()
            .map(|v| {
                vec![
                    v.kek_id.clone(),
                    yes_no(v.active).to_owned(),
                    yes_no(v.loaded).to_owned(),
                    v.records.to_string(),
                ]
            })
            .collect();
        table(w, &["kek id", "active", "loaded", "records"], &rows)?;
        let stranded: u64 = self
            .versions
            .iter()
            .filter(|v| !v.loaded)
            .map(|v| v.records)
            .sum();
        if stranded > 0 {
            writeln!(
                w,
                "\n{stranded} records are wrapped by master keys this control plane does not hold; \
                 configure those keys, then run 'memtracectl master-key rotate'"
            )?;
        }
        Ok(())
    }
}

/// `master-key rotate` result.
#[derive(Debug, Serialize)]
pub struct RotationView {
    pub active_kek_id: String,
    pub rewrapped: u64,
    pub already_current: u64,
}

impl Render for RotationView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "rewrapped {} data keys with master key {} ({} already current)",
            self.rewrapped, self.active_kek_id, self.already_current
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_json_and_table() {
        let view = KeyringView::from(&pb::KeyringStatus {
            versions: vec![
                pb::MasterKeyVersion {
                    kek_id: "kek_new".into(),
                    active: true,
                    loaded: true,
                    records: 3,
                },
                pb::MasterKeyVersion {
                    kek_id: "kek_old".into(),
                    active: false,
                    loaded: false,
                    records: 2,
                },
            ],
        });
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json["versions"][0],
            serde_json::json!({"kek_id": "kek_new", "active": true, "loaded": true, "records": 3})
        );
        let mut buf = Vec::new();
        view.table(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("KEK ID"));
        assert!(text.contains("2 records are wrapped by master keys"));
    }
}
