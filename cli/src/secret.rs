//! Secrets the CLI takes without a command line: from a file, or from stdin
//! with `-` (`--token-file`, `--api-key-file`). A secret passed in argv
//! still works (the original memtrace CLI took `--token` and `--api-key`),
//! with a warning: every user of the machine can read a process's argv
//! (`ps`, `/proc/PID/cmdline`) and shell history keeps it.

use crate::error::CliError;
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

/// The path that means stdin.
pub const STDIN: &str = "-";

/// Whether `path` means stdin.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == STDIN
}

/// Reads the secret `flag` names from `path` (`-`: `stdin`): one line, its
/// line ending dropped. Unreadable, empty, multi-line or non-UTF-8 content
/// is refused naming the flag and the rule (never quoting the content).
pub fn read(flag: &str, path: &Path, stdin: &mut dyn Read) -> Result<Zeroizing<String>, CliError> {
    let source = if is_stdin(path) {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    };
    let fail = |rule: &str| CliError::new(format!("{flag} {source}: {rule}"));
    let mut bytes = Zeroizing::new(Vec::new());
    let read = if is_stdin(path) {
        stdin.read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|mut file| file.read_to_end(&mut bytes))
    };
    read.map_err(|e| fail(&format!("cannot read it: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("not UTF-8 text"))?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Err(fail("empty; expected the secret on one line"));
    }
    if line.contains('\n') {
        return Err(fail("more than one line; expected only the secret"));
    }
    Ok(Zeroizing::new(line.to_owned()))
}

/// The one-line warning for a secret passed as `flag VALUE`: what leaks
/// and how to pass it instead.
pub fn argv_warning(flag: &str, what: &str, instead: &str) -> String {
    format!(
        "warning: {flag} puts the {what} on the command line, where other users of this machine \
         can read it (ps, /proc/PID/cmdline) and shell history keeps it; {instead} instead"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Cursor;

    #[test]
    fn one_line_from_a_file_or_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "s3cret value\r\n").unwrap();
        let mut no_stdin = Cursor::new(Vec::new());
        let read_file = read("--api-key-file", &file, &mut no_stdin).unwrap();
        assert_eq!(read_file.as_str(), "s3cret value");
        let mut stdin = Cursor::new(b"from-stdin\n".to_vec());
        let from_stdin = read("--api-key-file", Path::new("-"), &mut stdin).unwrap();
        assert_eq!(from_stdin.as_str(), "from-stdin");
    }

    #[test]
    fn bad_content_names_the_flag_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.env");
        for (content, rule) in [
            (&b"\n"[..], "empty"),
            (b"", "empty"),
            (b"KEY_A=s3cret\nKEY_B=other\n", "more than one line"),
            (b"\xff\xfe", "not UTF-8"),
        ] {
            std::fs::write(&file, content).unwrap();
            let err = read("--token-file", &file, &mut Cursor::new(Vec::new())).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with("--token-file ") && text.contains(rule),
                "{text}"
            );
            assert!(!text.contains("s3cret"), "{text}");
        }
        let missing = dir.path().join("missing");
        let err = read("--token-file", &missing, &mut Cursor::new(Vec::new())).unwrap_err();
        assert!(err.to_string().contains("cannot read it"), "{err}");
        let err = read(
            "--api-key-file",
            Path::new("-"),
            &mut Cursor::new(Vec::new()),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--api-key-file stdin: empty; expected the secret on one line"
        );
    }
}
