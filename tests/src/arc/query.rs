//! Arc's SQL front door, reproduced: the guard, the table-name resolution
//! and the rewrite onto the stand-in's SQLite tables.
//!
//! Steps, in Arc's order:
//! 1. [`validate`]: empty → 400, > 10,000 bytes → 400, DDL/DML patterns → 400.
//!    Like Arc Go, the DDL/DML patterns are matched on the raw SQL *including
//!    string literals* (`WHERE content = 'then DROP TABLE x'` is refused by
//!    Arc too). The stand-in also refuses, outside literals, DuckDB file
//!    readers (`read_csv(`, `read_parquet(`, `glob(`, …), statements such as
//!    `COPY`/`ATTACH`/`PRAGMA`/`INSTALL`/`LOAD` and a second statement.
//! 2. [`has_cross_database_syntax`]: with `x-arc-database` set, any
//!    `from a.b` / `join a.b` in the raw text (again, even inside a literal —
//!    Arc's check is a plain substring scan) → 400.
//! 3. [`rewrite`]: string literals are masked and comments dropped, then
//!    every `FROM x` / `JOIN x` / `FROM db.x` (Arc's regexes: identifiers
//!    `[A-Za-z0-9_]`, CTE names and `name(` table functions skipped) becomes
//!    the quoted internal table `"db.x"`. Hyphenated names cannot be
//!    referenced this way, in Arc or here.
//! 4. Timestamp literals: `time` is stored as integer µs, so a string literal
//!    compared with a `time` column (`time >= '…'`, `'…' < t.time`,
//!    `time BETWEEN '…' AND '…'`, `time IN ('…', …)`) is parsed (RFC 3339 or
//!    `YYYY-MM-DD[ HH:MM:SS[.f]]`, offset or `Z`, as DuckDB casts it) and
//!    replaced by its µs value. `time` compared with a bare integer fails, as
//!    DuckDB refuses TIMESTAMP vs INTEGER comparisons.
//!
//! SQL that both DuckDB (behind Arc) and SQLite (here) run the same way is
//! what a query builder should stay within: plain SELECT/WHERE/ORDER BY/
//! LIMIT/OFFSET/GROUP BY, `=`/`<`/`IN`/`LIKE` (case-sensitive in both here),
//! `COUNT(*)`, `lower()`, `length()`, `||`, `CAST(x AS BIGINT)`, every
//! expression aliased (engines name unaliased expressions differently), no
//! `::` casts, `INTERVAL`, `now()`, `ILIKE`, or integer `/` (DuckDB divides
//! as float), and time bounds computed in Rust as timestamp literals.

use super::store::table_ident;
use super::timefmt::parse_timestamp;
use regex::{Captures, Regex};
use std::collections::{BTreeSet, HashSet};
use std::sync::LazyLock;

/// Arc Go's cap on the SQL text (bytes, as Go's `len`).
pub const MAX_SQL_LEN: usize = 10_000;
/// Arc's message for everything the guard refuses.
pub const DANGEROUS: &str = "Dangerous SQL operation not allowed";

fn re(p: &str) -> Regex {
    // The patterns are constants of this file; a typo fails every test.
    Regex::new(p).unwrap_or_else(|e| panic!("bad built-in regex {p}: {e}"))
}

/// Arc Go's patterns, matched on the raw SQL.
static ARC_DANGEROUS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"(?i)\bDROP\s+(?:TABLE|DATABASE|INDEX|VIEW)\b",
        r"(?i)\bDELETE\s+FROM\b",
        r"(?i)\bTRUNCATE\s+TABLE\b",
        r"(?i)\bALTER\s+TABLE\b",
        r"(?i)\bCREATE\s+(?:TABLE|DATABASE|INDEX)\b",
        r"(?i)\bINSERT\s+INTO\b",
        r"(?i)\bUPDATE\s+\w+\s+SET\b",
    ]
    .into_iter()
    .map(re)
    .collect()
});

/// The stand-in's extra refusals, matched outside literals and comments.
static EXTRA_DANGEROUS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"(?i)^\s*(?:COPY|ATTACH|DETACH|INSTALL|LOAD|PRAGMA|EXPORT|IMPORT|VACUUM|SET|RESET|CALL|CHECKPOINT|BEGIN|COMMIT|ROLLBACK|CREATE|DROP|DELETE|INSERT|UPDATE|ALTER|REPLACE)\b",
        r"(?i)\b(?:read_csv|read_csv_auto|read_parquet|parquet_scan|read_json|read_json_auto|read_json_objects|read_ndjson|read_ndjson_objects|read_text|read_blob|read_xlsx|glob|sniff_csv|parquet_metadata|parquet_schema|load_extension)\s*\(",
        r";\s*\S",
    ]
    .into_iter()
    .map(re)
    .collect()
});

static TABLE_REF: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)\b(FROM|JOIN)(\s+)(LATERAL\s+)?(?:([A-Za-z0-9_]+)\.)?([A-Za-z0-9_]+)\b")
});
static CTE_NAMES: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\bWITH\s+(?:RECURSIVE\s+)?(\w+)\s+AS\s*\(|,\s*(\w+)\s+AS\s*\("));

const TIME: &str = r#"(?:\b[A-Za-z_][A-Za-z0-9_]*\.)?(?:"time"|\btime\b)"#;
const OP: &str = r"(?:>=|<=|<>|!=|==|=|>|<)";
const LIT: &str = "\u{1}(\\d+)\u{1}";

static TIME_CMP: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    vec![
        re(&format!(r"(?i){TIME}\s*{OP}\s*{LIT}")),
        re(&format!(r"(?i){LIT}\s*{OP}\s*{TIME}")),
        re(&format!(
            r"(?i){TIME}\s+(?:NOT\s+)?BETWEEN\s+{LIT}\s+AND\s+{LIT}"
        )),
    ]
});
static TIME_IN: LazyLock<Regex> =
    LazyLock::new(|| re(&format!(r"(?i){TIME}\s+(?:NOT\s+)?IN\s*\(([^)]*)\)")));
static TIME_INT: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i){TIME}\s*{OP}\s*[-+]?\d|[^\w\u{{1}}]\d+\s*{OP}\s*{TIME}"
    ))
});
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| re(LIT));
static TIME_AGG_ALIAS: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r#"(?i)\b(?:min|max|first|last|any_value)\s*\(\s*{TIME}\s*\)\s+(?:AS\s+)?"?([A-Za-z_][A-Za-z0-9_]*)"?"#
    ))
});

static ALIAS_OF_ALIAS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"(?i)\b[A-Za-z_][A-Za-z0-9_]*\.([A-Za-z_][A-Za-z0-9_]*)\s+AS\s+"?([A-Za-z_][A-Za-z0-9_]*)"?"#,
    )
});

/// Why a query is refused before or during the rewrite.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// Arc answers 400.
    BadRequest(String),
    /// Arc answers 500 (DuckDB would fail executing it).
    Failed(String),
}

/// The query on the stand-in's tables and the databases it reads.
#[derive(Debug)]
pub struct Rewritten {
    pub sql: String,
    pub databases: BTreeSet<String>,
    /// Lower-cased aliases of `min(time)`-like expressions: DuckDB returns
    /// them as TIMESTAMP, so they are rendered as time strings.
    pub time_aliases: HashSet<String>,
}

/// Step 1: emptiness, length, dangerous operations.
pub fn validate(sql: &str) -> Result<(), String> {
    if sql.trim().is_empty() {
        return Err("SQL query is required".into());
    }
    if sql.len() > MAX_SQL_LEN {
        return Err(format!(
            "SQL query exceeds maximum length ({MAX_SQL_LEN} characters)"
        ));
    }
    let masked = mask(sql).0;
    if ARC_DANGEROUS.iter().any(|r| r.is_match(sql))
        || EXTRA_DANGEROUS.iter().any(|r| r.is_match(&masked))
    {
        return Err(DANGEROUS.into());
    }
    Ok(())
}

/// Step 2, Arc's check: `from <ident>.<ident>` or `join <ident>.<ident>`
/// anywhere in the lower-cased raw text (one space/tab/newline run after the
/// keyword, which must itself be followed by a space).
pub fn has_cross_database_syntax(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    let b = lower.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    for kw in ["from ", "join "] {
        for (at, _) in lower.match_indices(kw) {
            let mut i = at + kw.len();
            while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n') {
                i += 1;
            }
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            if i > start && i + 1 < b.len() && b[i] == b'.' && ident(b[i + 1]) {
                return true;
            }
        }
    }
    false
}

/// Steps 3 and 4. `header_db` is the `x-arc-database` value, if any.
pub fn rewrite(sql: &str, header_db: Option<&str>) -> Result<Rewritten, Refusal> {
    let (masked, literals) = mask(sql);
    let ctes: HashSet<String> = CTE_NAMES
        .captures_iter(&masked)
        .filter_map(|c| c.get(1).or_else(|| c.get(2)))
        .map(|m| m.as_str().to_ascii_lowercase())
        .collect();
    let mut databases = BTreeSet::new();
    let mut refusal = None;
    let rewritten = TABLE_REF.replace_all(&masked, |c: &Captures<'_>| {
        let whole = c.get(0).map_or("", |m| m.as_str());
        let end = c.get(0).map_or(0, |m| m.end());
        let table = c.get(5).map_or("", |m| m.as_str());
        let lower = table.to_ascii_lowercase();
        let next = masked[end..].trim_start().chars().next();
        let explicit = c.get(4).map(|m| m.as_str());
        let skip = next == Some('(')
            || (explicit.is_none() && ctes.contains(&lower))
            || ["information_schema", "pg_", "duckdb_", "sqlite_"]
                .iter()
                .any(|p| lower.starts_with(p));
        if skip {
            return whole.to_string();
        }
        let db = match (explicit, header_db) {
            (Some(_), Some(_)) => {
                refusal = Some(Refusal::BadRequest(CROSS_DB.into()));
                return whole.to_string();
            }
            (Some(db), None) => db,
            (None, Some(db)) => db,
            (None, None) => "default",
        };
        databases.insert(db.to_string());
        format!(
            "{}{}{}{}",
            &c[1],
            &c[2],
            c.get(3).map_or("", |m| m.as_str()),
            table_ident(db, table)
        )
    });
    if let Some(r) = refusal {
        return Err(r);
    }
    let times = time_literals(&rewritten)?;
    let mut failed = None;
    let sql = PLACEHOLDER.replace_all(&rewritten, |c: &Captures<'_>| {
        let idx: usize = c[1].parse().unwrap_or(usize::MAX);
        let Some(lit) = literals.get(idx) else {
            return String::new();
        };
        if !times.contains(&idx) {
            return lit.clone();
        }
        let inner = lit
            .strip_prefix('\'')
            .and_then(|l| l.strip_suffix('\''))
            .map(|l| l.replace("''", "'"));
        match inner.as_deref().and_then(|l| parse_timestamp(l.trim())) {
            Some(us) => us.to_string(),
            None => {
                failed = Some(Refusal::Failed(format!(
                    "Conversion Error: invalid timestamp field format: {lit}"
                )));
                lit.clone()
            }
        }
    });
    if let Some(f) = failed {
        return Err(f);
    }
    let mut time_aliases: HashSet<String> = TIME_AGG_ALIAS
        .captures_iter(&masked)
        .map(|c| c[1].to_ascii_lowercase())
        .collect();
    // a time alias re-selected from a subquery (`latest.max_time AS time`)
    // keeps its TIMESTAMP type in DuckDB
    for c in ALIAS_OF_ALIAS.captures_iter(&masked) {
        if time_aliases.contains(&c[1].to_ascii_lowercase()) {
            time_aliases.insert(c[2].to_ascii_lowercase());
        }
    }
    Ok(Rewritten {
        sql: sql.into_owned(),
        databases,
        time_aliases,
    })
}

/// Arc's message for `db.table` with the header set.
pub const CROSS_DB: &str =
    "Cross-database queries (db.table syntax) not allowed when x-arc-database header is set";

/// Indexes of the literals compared with a `time` column.
fn time_literals(masked: &str) -> Result<HashSet<usize>, Refusal> {
    if TIME_INT.is_match(masked) {
        return Err(Refusal::Failed(
            "Binder Error: Cannot compare values of type TIMESTAMP and INTEGER \
             (compare time with a timestamp literal)"
                .into(),
        ));
    }
    let mut out = HashSet::new();
    let mut add = |s: &str| {
        for c in PLACEHOLDER.captures_iter(s) {
            if let Ok(i) = c[1].parse() {
                out.insert(i);
            }
        }
    };
    for r in TIME_CMP.iter() {
        for m in r.find_iter(masked) {
            add(m.as_str());
        }
    }
    for c in TIME_IN.captures_iter(masked) {
        add(&c[1]);
    }
    Ok(out)
}

/// Replaces each single-quoted literal with `\u{1}<n>\u{1}` (its index in the
/// returned list, which keeps the literal with its quotes) and drops
/// comments; double-quoted identifiers are copied as they are.
pub(super) fn mask(sql: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(sql.len());
    let mut lits = Vec::new();
    let mut it = sql.char_indices().peekable();
    while let Some((i, ch)) = it.next() {
        match ch {
            '\'' | '"' => {
                let mut end = sql.len();
                while let Some((j, c)) = it.next() {
                    if c == ch {
                        if it.peek().map(|p| p.1) == Some(ch) {
                            it.next();
                            continue;
                        }
                        end = j + 1;
                        break;
                    }
                }
                if ch == '"' {
                    out.push_str(&sql[i..end]);
                } else {
                    out.push_str(&format!("\u{1}{}\u{1}", lits.len()));
                    lits.push(sql[i..end].to_string());
                }
            }
            '-' if it.peek().map(|p| p.1) == Some('-') => {
                for (_, c) in it.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if it.peek().map(|p| p.1) == Some('*') => {
                it.next();
                let mut prev = ' ';
                for (_, c) in it.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                out.push(' ');
            }
            c => out.push(c),
        }
    }
    (out, lits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_tables_and_time_literals() {
        let r = rewrite(
            "SELECT * FROM memories m WHERE m.time >= '2025-01-01T00:00:00Z' AND note = 'from x' -- FROM y\nORDER BY time",
            Some("acme"),
        )
        .unwrap();
        assert_eq!(
            r.sql,
            "SELECT * FROM \"acme.memories\" m WHERE m.time >= 1735689600000000 AND note = 'from x' \nORDER BY time"
        );
        let r = rewrite(
            "WITH t AS (SELECT 1 AS x FROM a.b) SELECT * FROM t JOIN c ON 1=1",
            None,
        )
        .unwrap();
        assert!(r.sql.contains("FROM \"a.b\"") && r.sql.contains("FROM t JOIN \"default.c\""));
        assert!(matches!(
            rewrite("SELECT * FROM a.b", Some("x")),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            rewrite("SELECT * FROM m WHERE time > 5", None),
            Err(Refusal::Failed(_))
        ));
        assert!(validate("SELECT read_csv('x')").is_err());
        assert!(validate("SELECT 'read_csv(' AS s").is_ok());
        assert!(has_cross_database_syntax("select 'copied from a.b'"));
    }
}
