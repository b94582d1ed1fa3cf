//! `docs/CONFIGURATION.md` matches the code: every static setting (each
//! field of the config file, hence each `MEMTRACE_<SECTION>_<KEY>`) is
//! documented, every environment-only variable a binary reads is listed,
//! and the runtime settings table is exactly the registry's (the test
//! prints the table to paste when it is not).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use memtrace_common::config::MemtraceConfig;
use memtrace_common::settings::{DefaultValue, SETTINGS};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn doc() -> String {
    std::fs::read_to_string(repo().join("docs/CONFIGURATION.md")).unwrap()
}

/// `section.key` of every static setting.
fn static_keys() -> Vec<String> {
    let Value::Object(sections) = serde_json::to_value(MemtraceConfig::default()).unwrap() else {
        panic!("the config serialises to an object");
    };
    let mut keys = Vec::new();
    for (section, fields) in sections {
        let Value::Object(fields) = fields else {
            panic!("section {section} is a table");
        };
        keys.extend(fields.keys().map(|k| format!("{section}.{k}")));
    }
    keys
}

#[test]
fn every_static_setting_is_documented() {
    let doc = doc();
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| ")).collect();
    let mut missing = Vec::new();
    for key in static_keys() {
        let (section, field) = key.split_once('.').unwrap();
        // `| section.a / b |` rows name several fields of one section
        let documented = rows.iter().any(|row| {
            let first = row.split('|').nth(1).unwrap_or_default().trim();
            first.starts_with(&format!("{section}."))
                && first
                    .trim_start_matches(&format!("{section}."))
                    .split(" / ")
                    .any(|f| f.trim() == field)
        });
        if !documented {
            missing.push(key);
        }
    }
    assert!(
        missing.is_empty(),
        "settings without a row in docs/CONFIGURATION.md: {missing:?}"
    );
}

/// Every `"MEMTRACE_…"`, `"RUST_LOG"` or `"HOSTNAME"` literal in the
/// non-test sources of the binaries' crates.
fn env_literals() -> Vec<String> {
    let re = regex::Regex::new(r#""((?:MEMTRACE_[A-Z0-9_]+)|RUST_LOG|HOSTNAME)""#).unwrap();
    let mut found = Vec::new();
    for krate in ["common", "control-plane", "data-plane", "cli"] {
        visit(&repo().join(krate).join("src"), &mut |path, text| {
            if path.ends_with("tests.rs") || path.to_string_lossy().contains("/tests/") {
                return;
            }
            // unit-test modules sit at the end of a file
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            found.extend(re.captures_iter(code).map(|c| c[1].to_owned()));
        });
    }
    found.sort();
    found.dedup();
    found
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path, &str)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, f);
        } else if path.extension().is_some_and(|e| e == "rs") {
            f(&path, &std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_variable_a_binary_reads_is_documented() {
    let doc = doc();
    let derived: Vec<String> = static_keys()
        .iter()
        .map(|k| format!("MEMTRACE_{}", k.replace('.', "_").to_ascii_uppercase()))
        .collect();
    let literals = env_literals();
    assert!(literals.len() >= 10, "{literals:?}");
    let missing: Vec<&String> = literals
        .iter()
        .filter(|v| !derived.contains(v) && !doc.contains(&format!("`{v}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "variables read by the binaries but not in docs/CONFIGURATION.md: {missing:?}"
    );
}

fn default_text(d: DefaultValue) -> String {
    match d {
        DefaultValue::Int(v) => format!("`{v}`"),
        DefaultValue::Bool(v) => format!("`{v}`"),
        DefaultValue::Str("") => "empty".to_owned(),
        DefaultValue::Str(v) => format!("`{v}`"),
    }
}

/// `text` inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The runtime settings table, from the registry.
fn runtime_table() -> String {
    let mut out = String::from(
        "| key | type and range | default | category | per org | what it does |\n|---|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "| `{}` | {} {} | {} | {} | {} | {}{} |\n",
            s.key,
            s.ty.name(),
            cell(&s.ty.range()),
            default_text(s.default),
            s.category.as_str(),
            if s.per_org { "yes" } else { "no" },
            cell(s.description),
            if s.sensitive { " (sensitive)" } else { "" },
        ));
    }
    out
}

#[test]
fn the_runtime_settings_table_is_the_registry() {
    let table = runtime_table();
    assert!(
        doc().contains(&table),
        "docs/CONFIGURATION.md should hold this table (under \"Runtime settings\"):\n\n{table}"
    );
}
