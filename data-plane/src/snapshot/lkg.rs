//! The last-known-good file: the raw bus pairs of the last applied snapshot
//! (values still sealed, exactly as etcd holds them), so a restarted worker
//! can serve before etcd is back. Written to `<path>.tmp`, fsynced, renamed.
//! A missing, corrupt or unknown-format file is a cache miss, never fatal.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct File {
    format: u32,
    revision: i64,
    /// (key, base64 value)
    pairs: Vec<(String, String)>,
}

/// A snapshot read back from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub revision: i64,
    pub pairs: Vec<(String, Vec<u8>)>,
}

/// Writes atomically; the file is private to the worker's user.
pub fn write(path: &Path, revision: i64, pairs: &[(&String, &Vec<u8>)]) -> std::io::Result<()> {
    let file = File {
        format: FORMAT,
        revision,
        pairs: pairs
            .iter()
            .map(|(k, v)| ((*k).clone(), STANDARD.encode(v)))
            .collect(),
    };
    let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    let tmp = tmp_path(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut out = options.open(&tmp)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // make the rename durable
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Reads the file; `None` when missing or unusable (logged).
pub fn read(path: &Path) -> Option<Saved> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "last-known-good snapshot unreadable; ignoring it");
            return None;
        }
    };
    let parsed: File = match serde_json::from_slice(&bytes) {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "last-known-good snapshot corrupt; ignoring it");
            return None;
        }
    };
    if parsed.format != FORMAT {
        tracing::warn!(path = %path.display(), format = parsed.format, "last-known-good snapshot has an unknown format; ignoring it");
        return None;
    }
    let mut pairs = Vec::with_capacity(parsed.pairs.len());
    for (key, value) in parsed.pairs {
        match STANDARD.decode(value) {
            Ok(value) => pairs.push((key, value)),
            Err(_) => {
                tracing::warn!(path = %path.display(), "last-known-good snapshot has a bad value; ignoring the file");
                return None;
            }
        }
    }
    Some(Saved {
        revision: parsed.revision,
        pairs,
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/snapshot.json");
        assert_eq!(read(&path), None);
        let (k1, v1) = ("/m/orgs/a".to_owned(), vec![1u8, 2, 3]);
        let (k2, v2) = ("/m/keys/b".to_owned(), vec![]);
        write(&path, 42, &[(&k1, &v1), (&k2, &v2)]).unwrap();
        let saved = read(&path).unwrap();
        assert_eq!(saved.revision, 42);
        assert_eq!(saved.pairs, vec![(k1, v1), (k2, v2)]);
        assert!(!tmp_path(&path).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(read(&path), None);
        std::fs::write(&path, br#"{"format":9,"revision":1,"pairs":[]}"#).unwrap();
        assert_eq!(read(&path), None);
    }
}
