//! `memtracectl keygen …`: key material generated locally, no server needed.

use crate::args::OutputFormat;
use crate::output::{Output, Render};
use clap::Subcommand;
use serde::Serialize;
use std::io::{self, Write};

#[derive(Debug, Subcommand)]
pub enum KeygenCommand {
    /// print a fresh base64 32-byte key for MEMTRACE_MASTER_KEY
    Master,
}

pub fn run(command: KeygenCommand, out: &mut Output<'_>) -> anyhow::Result<()> {
    match command {
        KeygenCommand::Master => {
            let view = GeneratedKeyView {
                key: memtrace_common::keys::generate_key_b64(),
            };
            out.emit(&view)?;
            if out.format == OutputFormat::Table {
                out.note(
                    "export it as MEMTRACE_MASTER_KEY for the control plane only, \
                     and keep a copy somewhere safe",
                )?;
            }
            Ok(())
        }
    }
}

/// `keygen master` result: a base64 32-byte key.
#[derive(Debug, Serialize)]
pub struct GeneratedKeyView {
    pub key: String,
}

impl Render for GeneratedKeyView {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "{}", self.key)
    }
}
