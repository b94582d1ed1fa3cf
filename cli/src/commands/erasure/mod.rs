//! `memtracectl erasure …`: the control plane's erasure jobs (memories a
//! tenant deleted, or a deleted org, being erased from its store) with
//! their rows removed, verification and signed receipt; the keys that sign
//! receipts; and the offline verification of a receipt.

mod jobs;
pub(crate) mod receipts;

pub use receipts::verify;

use crate::client::Admin;
use crate::output::Output;
use clap::Subcommand;
use std::io;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ErasureCommand {
    /// list erasure jobs, newest first
    List {
        /// only this org's jobs
        #[arg(long, value_name = "ORG_ID")]
        org: Option<String>,
        /// only jobs in this state
        #[arg(long, value_parser = ["requested", "running", "blocked", "done", "failed"])]
        state: Option<String>,
    },
    /// one job: state, target, rows removed, verification and receipt
    Show {
        /// the erasure id (era_…)
        id: String,
    },

    /// list the public keys that sign erasure receipts (json: a key set for `verify --keys`)
    Keys,
    /// add the next receipt signing key; older keys are retired and stay listed
    #[command(name = "rotate-key")]
    RotateKey,
    /// verify a signed erasure receipt offline (no server contact)
    Verify {
        /// the receipt document (- for stdin)
        #[arg(value_name = "RECEIPT.json")]
        receipt: PathBuf,
        /// also require the signing key to be one of these (the output of `erasure keys --output json`)
        #[arg(long, value_name = "KEYS.json")]
        keys: Option<PathBuf>,
    },
}

pub async fn run(
    command: ErasureCommand,
    admin: &Admin,
    out: &mut Output<'_>,
) -> anyhow::Result<()> {
    match command {
        ErasureCommand::List { org, state } => jobs::list(admin, org, state, out).await,
        ErasureCommand::Show { id } => jobs::show(admin, id, out).await,
        ErasureCommand::Keys => receipts::keys(admin, out).await,
        ErasureCommand::RotateKey => receipts::rotate_key(admin, out).await,
        // offline; `memtracectl` dispatches it without connecting
        ErasureCommand::Verify { receipt, keys } => {
            verify(&receipt, keys.as_deref(), &mut io::stdin(), out)
        }
    }
}
