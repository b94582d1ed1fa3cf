//! Locating the workspace's built binaries. They are built once by the test
//! command (`cargo build --workspace --all-targets`); a missing binary is a
//! loud failure, never a skip.

use anyhow::{Context, bail};
use std::path::PathBuf;

/// Path of a binary in the same target directory as the running test.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/deps/<test-binary>, or target/<profile>/<bench-binary>
    let parent = exe.parent().context("test binary has no directory")?;
    let profile_dir = if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent().context("deps directory has no parent")?
    } else {
        parent
    };
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "binary {} not found; build it first with `cargo build --workspace --all-targets` (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}
