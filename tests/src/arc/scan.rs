//! What a statement reads, for the cost model: one [`Scan`] per table
//! reference (`FROM`/`JOIN` of a stored table, so a self-join scans twice,
//! as DuckDB does), with the columns named in that reference's own query
//! scope and the string-pattern predicates evaluated there.
//!
//! Scopes: the top-level statement and each parenthesised subquery (a `(`
//! followed by `SELECT` or `WITH`) are separate scopes; a function call's
//! parentheses belong to the scope around them. A table reference is charged
//! the identifiers of its scope only, so in
//! `SELECT … MAX(m.content) … FROM t AS m JOIN (SELECT v.id, MAX(v.time) FROM t AS v WHERE v.agent_id = …) …`
//! the inner scan reads `id, time, agent_id` and the outer one every column
//! it names. Column names are matched as words, so an alias equal to a
//! column name counts as that column (an over-estimate of at most a few
//! columns). `SELECT *`, `x.*` and `, *` read every column.
//!
//! Runs on the rewritten SQL, where stored tables are the quoted internal
//! names `"<database>.<measurement>"` (see [`super::store::table_ident`]).

use super::query::mask;
use regex::Regex;
use std::collections::BTreeSet;
use std::sync::LazyLock;

/// One table reference of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub database: String,
    pub measurement: String,
    pub columns: Columns,
    /// String-pattern predicates in the scope (`LIKE`, `instr(`, …).
    pub patterns: u32,
}

/// The columns a scan reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Columns {
    /// `*`: every column of the table.
    All,
    /// Lower-cased words of the scope; the caller keeps the table's columns.
    Named(BTreeSet<String>),
}

fn re(p: &str) -> Regex {
    // The patterns are constants of this file; a typo fails every test.
    Regex::new(p).unwrap_or_else(|e| panic!("bad built-in regex {p}: {e}"))
}

static TABLE: LazyLock<Regex> =
    LazyLock::new(|| re(r#"(?i)\b(?:FROM|JOIN)\s+(?:LATERAL\s+)?"((?:[^"]|"")+)""#));
static WORD: LazyLock<Regex> = LazyLock::new(|| re(r#"[A-Za-z_][A-Za-z0-9_]*|"([^"]+)""#));
static STAR: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?:\bSELECT\s+(?:DISTINCT\s+)?|,\s*|\.)\*"));
static PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(?:I?LIKE|GLOB|SIMILAR\s+TO)\b|\b(?:instr|strpos|position|contains|starts_with|ends_with|regexp_\w+)\s*\(",
    )
});

/// The scans of a rewritten statement, in the order they appear.
pub fn scans(sql: &str) -> Vec<Scan> {
    let (masked, _) = mask(sql);
    let (scope_of, texts) = scopes(&masked);
    let mut out = Vec::new();
    for c in TABLE.captures_iter(&masked) {
        let (Some(all), Some(name)) = (c.get(0), c.get(1)) else {
            continue;
        };
        let name = name.as_str().replace("\"\"", "\"");
        let Some((database, measurement)) = name.split_once('.') else {
            continue;
        };
        let text = &texts[scope_of[all.start()]];
        let columns = if STAR.is_match(text) {
            Columns::All
        } else {
            Columns::Named(
                WORD.captures_iter(text)
                    .map(|w| {
                        w.get(1)
                            .or_else(|| w.get(0))
                            .map_or(String::new(), |m| m.as_str().to_ascii_lowercase())
                    })
                    .collect(),
            )
        };
        out.push(Scan {
            database: database.to_string(),
            measurement: measurement.to_string(),
            columns,
            patterns: u32::try_from(PATTERN.find_iter(text).count()).unwrap_or(u32::MAX),
        });
    }
    out
}

/// Per byte of `masked`, its scope index; and each scope's own text (without
/// its subqueries, which are replaced by a space).
fn scopes(masked: &str) -> (Vec<usize>, Vec<String>) {
    let bytes = masked.as_bytes();
    let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
    let mut stack = vec![0usize];
    let mut scope_of = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        let top = *stack.last().unwrap_or(&0);
        match b {
            b'(' => {
                let rest = masked[i + 1..].trim_start().as_bytes();
                let starts = |kw: &[u8]| {
                    rest.len() >= kw.len()
                        && rest[..kw.len()].eq_ignore_ascii_case(kw)
                        && rest
                            .get(kw.len())
                            .is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'_')
                };
                if starts(b"select") || starts(b"with") {
                    texts[top].push(b' ');
                    texts.push(Vec::new());
                    stack.push(texts.len() - 1);
                } else {
                    texts[top].push(b);
                    stack.push(top);
                }
                scope_of.push(top);
            }
            b')' => {
                if stack.len() > 1 {
                    stack.pop();
                }
                let parent = *stack.last().unwrap_or(&0);
                if parent == top {
                    texts[top].push(b);
                }
                scope_of.push(parent);
            }
            _ => {
                texts[top].push(b);
                scope_of.push(top);
            }
        }
    }
    let texts = texts
        .into_iter()
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .collect();
    (scope_of, texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reference_is_charged_its_own_scope() {
        let sql = "SELECT latest.max_time AS time, m.id AS id, MAX(m.content) AS content \
                   FROM \"acme.memories\" AS m JOIN (SELECT v.id AS id, MAX(v.time) AS max_time \
                   FROM \"acme.memories\" AS v WHERE v.agent_id = 'a' AND lower(v.content) LIKE '%x%' \
                   GROUP BY v.id) AS latest ON m.id = latest.id WHERE m.org_id = 'o'";
        let s = scans(sql);
        assert_eq!(s.len(), 2, "{s:?}");
        let Columns::Named(outer) = &s[0].columns else {
            panic!("{s:?}")
        };
        for c in ["time", "id", "content", "org_id"] {
            assert!(outer.contains(c), "{c} in {outer:?}");
        }
        assert!(!outer.contains("agent_id"), "{outer:?}");
        assert_eq!(s[0].patterns, 0);
        let Columns::Named(inner) = &s[1].columns else {
            panic!("{s:?}")
        };
        for c in ["id", "time", "agent_id", "content"] {
            assert!(inner.contains(c), "{c} in {inner:?}");
        }
        assert!(!inner.contains("org_id"), "{inner:?}");
        assert_eq!(s[1].patterns, 1);
        assert_eq!(
            (s[1].database.as_str(), s[1].measurement.as_str()),
            ("acme", "memories")
        );
    }

    #[test]
    fn stars_literals_and_counts() {
        let s = scans("SELECT * FROM \"d.m\" WHERE note = 'FROM \"x.y\" agent_id' LIMIT 5");
        assert_eq!(s.len(), 1, "a table name inside a literal is no scan");
        assert_eq!(s[0].columns, Columns::All);
        let s = scans("SELECT COUNT(*) AS n FROM \"d.m\" WHERE \"Agent\" = 'a'");
        let Columns::Named(words) = &s[0].columns else {
            panic!("COUNT(*) reads no column: {s:?}")
        };
        assert!(words.contains("agent") && !words.contains("*"), "{words:?}");
        let s = scans("SELECT m.* FROM \"d.m\" AS m");
        assert_eq!(s[0].columns, Columns::All);
    }
}
