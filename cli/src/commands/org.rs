//! `memtracectl org …`: organizations (their arc bindings are in [`super::arc`]).

use super::arc;
use crate::client::Admin;
use crate::error::Subject;
use crate::output::{Output, Render, cell, fields, rfc3339, table, yes_no};
use clap::{Args, Subcommand};
use memtrace_proto::admin::v1 as pb;
use serde::Serialize;
use std::io::{self, Write};
use std::path::PathBuf;

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
    /// export the org's memories as JSONL through the worker at MEMTRACE_URL (a read-only key is minted for it and revoked after)
    Export(super::export::ExportArgs),
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
    /// arc api key (stored envelope-encrypted, never shown again); visible to other users of the machine: prefer --api-key-file
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// read the arc api key from this file (- for stdin) instead of the command line
    #[arg(long, value_name = "PATH", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// arc measurement for memory rows [server default: events]
    #[arg(long)]
    pub measurement: Option<String>,
    /// replace an existing binding instead of failing
    #[arg(long)]
    pub replace: bool,
}

pub async fn run(command: OrgCommand, admin: &Admin, out: &mut Output<'_>) -> anyhow::Result<()> {
    match command {
        OrgCommand::Create { name } => {
            let org = admin
                .orgs()
                .create_org(admin.request(pb::CreateOrgRequest {
                    name,
                    id: String::new(),
                }))
                .await
                .map_err(|s| admin.fail(s, Subject::None))?
                .into_inner();
            out.emit(&CreatedOrgView::from(&org))
        }
        OrgCommand::List => {
            let list = admin
                .orgs()
                .list_orgs(admin.request(pb::ListOrgsRequest {}))
                .await
                .map_err(|s| admin.fail(s, Subject::None))?
                .into_inner();
            out.emit(&OrgListView {
                orgs: list.orgs.iter().map(OrgView::from).collect(),
            })
        }
        OrgCommand::Get { org_id } => {
            let org = admin
                .orgs()
                .get_org(admin.request(pb::GetOrgRequest { org_id }))
                .await
                .map_err(|s| admin.fail(s, Subject::Org))?
                .into_inner();
            out.emit(&OrgView::from(&org))
        }
        OrgCommand::Delete { org_id } => {
            let deleted = admin
                .orgs()
                .delete_org(admin.request(pb::DeleteOrgRequest { org_id }))
                .await
                .map_err(|s| admin.fail(s, Subject::Org))?
                .into_inner();
            out.emit(&DeletedOrgView {
                org_id: deleted.org_id,
                arc_binding_removed: deleted.arc_binding_removed,
                api_keys_removed: deleted.api_keys_removed,
            })
        }
        OrgCommand::AddArc(args) => arc::add(args, admin, out).await,
        OrgCommand::ShowArc { org_id } => arc::show(org_id, admin, out).await,
        OrgCommand::RemoveArc { org_id } => arc::remove(org_id, admin, out).await,
        OrgCommand::TestArc { org_id } => arc::test(org_id, admin, out).await,
        // run by the caller: it streams JSONL, not an `Output`
        OrgCommand::Export(_) => Ok(()),
    }
}

/// `org create` result.
#[derive(Debug, Serialize)]
pub struct CreatedOrgView {
    pub id: String,
    pub name: String,
    pub created_at: Option<String>,
}

impl From<&pb::Org> for CreatedOrgView {
    fn from(org: &pb::Org) -> Self {
        Self {
            id: org.id.clone(),
            name: org.name.clone(),
            created_at: rfc3339(org.created_at.as_ref()),
        }
    }
}

impl Render for CreatedOrgView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        fields(
            w,
            &[
                ("id", self.id.clone()),
                ("name", self.name.clone()),
                ("created", cell(&self.created_at, "-")),
            ],
        )
    }
}

/// One org, as `org get` and each entry of `org list`.
#[derive(Debug, Serialize)]
pub struct OrgView {
    pub id: String,
    pub name: String,
    pub created_at: Option<String>,
    pub has_arc_binding: bool,
    pub active_api_keys: u32,
}

impl From<&pb::Org> for OrgView {
    fn from(org: &pb::Org) -> Self {
        Self {
            id: org.id.clone(),
            name: org.name.clone(),
            created_at: rfc3339(org.created_at.as_ref()),
            has_arc_binding: org.has_arc_binding,
            active_api_keys: org.active_api_keys,
        }
    }
}

impl Render for OrgView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        fields(
            w,
            &[
                ("id", self.id.clone()),
                ("name", self.name.clone()),
                ("created", cell(&self.created_at, "-")),
                ("arc binding", yes_no(self.has_arc_binding).to_owned()),
                ("active api keys", self.active_api_keys.to_string()),
            ],
        )
    }
}

/// `org list` result.
#[derive(Debug, Serialize)]
pub struct OrgListView {
    pub orgs: Vec<OrgView>,
}

impl Render for OrgListView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        if self.orgs.is_empty() {
            return writeln!(w, "no orgs; create one with 'memtracectl org create NAME'");
        }
        let rows: Vec<Vec<String>> = self
            .orgs
            .iter()
            .map(|org| {
                vec![
                    org.id.clone(),
                    org.name.clone(),
                    cell(&org.created_at, "-"),
                    yes_no(org.has_arc_binding).to_owned(),
                    org.active_api_keys.to_string(),
                ]
            })
            .collect();
        table(w, &["id", "name", "created", "arc", "active keys"], &rows)
    }
}

/// `org delete` result.
#[derive(Debug, Serialize)]
pub struct DeletedOrgView {
    pub org_id: String,
    pub arc_binding_removed: bool,
    pub api_keys_removed: u32,
}

impl Render for DeletedOrgView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let binding = if self.arc_binding_removed {
            "its arc binding"
        } else {
            "no arc binding"
        };
        let keys = match self.api_keys_removed {
            1 => "1 api key".to_owned(),
            n => format!("{n} api keys"),
        };
        writeln!(w, "deleted org {} with {binding} and {keys}", self.org_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_table_says_what_was_removed() {
        let mut buf = Vec::new();
        DeletedOrgView {
            org_id: "org_1".into(),
            arc_binding_removed: true,
            api_keys_removed: 2,
        }
        .table(&mut buf)
        .unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "deleted org org_1 with its arc binding and 2 api keys\n"
        );
    }
}
