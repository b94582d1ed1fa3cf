//! Locating the workspace's built binaries. They are built once by the test
//! command (`cargo build --workspace --all-targets`); a missing binary is a
//! loud failure, never a skip.

use anyhow::{Context, bail};
use std::path::PathBuf;

/// Path of a binary in the same target directory as the running test.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no target directory")?;
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "binary {} not found; build it first with `cargo build --workspace --all-targets` (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}
