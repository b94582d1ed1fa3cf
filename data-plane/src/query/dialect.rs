//! How a table, a time and a string literal are written for each engine.
//! Nothing else differs between the engines.

use super::time::UnixMicros;
use super::validate::{Ident, strip_nul};

/// The engine a query is written for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialect {
    /// Arc (DuckDB over Parquet). Tables are written `database.measurement`,
    /// unquoted: that is the only form Arc's regex rewriter turns into a
    /// `read_parquet(...)` on every build (`"db"."m"` is masked as a string
    /// literal by Arc and never rewritten), and it needs no `x-arc-database`
    /// header (which, when set, makes Arc refuse `db.m` with a 400: send
    /// queries without it). `time` is a `TIMESTAMP`.
    Arc { database: Ident },
    /// The embedded single-node SQLite store: tables are written `"name"`
    /// and `time` is an `INTEGER` of microseconds.
    Embedded,
}

impl Dialect {
    /// The table reference for `FROM`.
    pub fn table_ref(&self, table: &Ident) -> String {
        match self {
            Self::Arc { database } => format!("{database}.{table}"),
            Self::Embedded => format!("\"{table}\""),
        }
    }

    /// A literal comparable with the `time` column.
    ///
    /// Arc: `'2026-11-25 12:00:00.000000'`, a string DuckDB casts to the
    /// column's `TIMESTAMP` (UTC wall clock, microseconds), and the form Arc's
    /// partition pruner recognises in `time > '...'` / `time < '...'`; a
    /// typed `TIMESTAMP '...'` literal would hide the bound from the pruner.
    /// Embedded: the integer microseconds.
    pub fn time_literal(&self, t: UnixMicros) -> String {
        match self {
            Self::Arc { .. } => format!("'{}'", t.to_sql_timestamp()),
            Self::Embedded => t.0.to_string(),
        }
    }

    /// `expr` (a `time` value) as integer microseconds since the epoch, for
    /// arithmetic: DuckDB's `epoch_us(TIMESTAMP)`; the embedded store's
    /// `time` already is one.
    pub fn micros(&self, expr: &str) -> String {
        match self {
            Self::Arc { .. } => format!("epoch_us({expr})"),
            Self::Embedded => expr.to_owned(),
        }
    }

    /// A string-valued SQL expression equal to `value` with NULs removed.
    ///
    /// Both engines: single quotes are doubled and backslashes are ordinary
    /// characters (standard SQL strings, no `E'...'`).
    ///
    /// Arc only, to survive Arc's regex pre-processing of the SQL text:
    /// - the value is cut into pieces joined by `||`, a new piece starting at
    ///   each whitespace run, so no keyword in the data is followed by
    ///   whitespace inside one literal and Arc's guard (`DROP\s+TABLE`,
    ///   `DELETE\s+FROM`, ...) cannot refuse a search for "drop table";
    /// - no piece ends with a backslash, since Arc's literal masker takes `\'`
    ///   for an escaped quote and would then mis-mask the rest of the query:
    ///   a cut point is moved before a backslash run, and backslashes ending
    ///   the value are written `chr(92)`.
    pub fn string_literal(&self, value: &str) -> String {
        // ids, keys and types, the common case: no
        // NUL, quote, backslash or whitespace, so one piece, as it is
        if is_plain(value) {
            let mut out = String::with_capacity(value.len() + 2);
            out.push('\'');
            out.push_str(value);
            out.push('\'');
            return out;
        }
        let value = strip_nul(value);
        match self {
            Self::Embedded => quote(&value),
            Self::Arc { .. } => arc_string(&value),
        }
    }
}

/// Only characters no dialect strips, splits or escapes.
fn is_plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn quote(piece: &str) -> String {
    format!("'{}'", piece.replace('\'', "''"))
}

fn arc_string(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    // Cut points: the start of each whitespace run, moved back before any
    // backslashes that would otherwise end the previous piece.
    let mut cuts = Vec::new();
    for i in 1..chars.len() {
        if chars[i].is_ascii_whitespace() && !chars[i - 1].is_ascii_whitespace() {
            let mut cut = i;
            while cut > 0 && chars[cut - 1] == '\\' {
                cut -= 1;
            }
            if cut > 0 && cuts.last() != Some(&cut) {
                cuts.push(cut);
            }
        }
    }
    let mut parts = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain(std::iter::once(chars.len())) {
        let piece: String = chars[start..cut].iter().collect();
        start = cut;
        let body = piece.trim_end_matches('\\');
        let trailing = piece.len() - body.len();
        if !body.is_empty() || trailing == 0 {
            parts.push(quote(body));
        }
        // Only the last piece can end with backslashes (see the cuts above).
        parts.extend(std::iter::repeat_n("chr(92)".to_owned(), trailing));
    }
    parts.join(" || ")
}

/// `%value%` for `LIKE ... ESCAPE '!'`: `!`, `%` and `_` in the value are
/// escaped with `!`. The escape character is `!`, not `\`, because
/// `ESCAPE '\'` is itself a literal ending in a backslash (see
/// [`Dialect::string_literal`]).
pub(crate) fn like_contains(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('%');
    for c in value.chars() {
        if matches!(c, '!' | '%' | '_') {
            out.push('!');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod unit {
    use super::*;

    fn arc() -> Dialect {
        Dialect::Arc {
            database: Ident::database("tenant").unwrap(),
        }
    }

    #[test]
    fn plain_values_render_as_the_general_path_does() {
        for v in ["k", "0123456789abcdef0123456789abcdef", "agent_a-1.x", ""] {
            assert!(is_plain(v));
            assert_eq!(Dialect::Embedded.string_literal(v), quote(v), "{v}");
            assert_eq!(arc().string_literal(v), arc_string(v), "{v}");
        }
        for v in ["a b", "it's", "a\\", "a\0b", "é"] {
            assert!(!is_plain(v), "{v}");
        }
    }

    #[test]
    fn embedded_literals() {
        let d = Dialect::Embedded;
        assert_eq!(d.string_literal("it's"), "'it''s'");
        assert_eq!(d.string_literal("a\\"), "'a\\'");
        assert_eq!(d.string_literal("n\0ul"), "'nul'");
        assert_eq!(
            d.table_ref(&Ident::table("memories").unwrap()),
            "\"memories\""
        );
        assert_eq!(d.time_literal(UnixMicros(42)), "42");
    }

    #[test]
    fn arc_literals() {
        let d = arc();
        assert_eq!(d.string_literal(""), "''");
        assert_eq!(d.string_literal("plain"), "'plain'");
        assert_eq!(
            d.string_literal("drop table x"),
            "'drop' || ' table' || ' x'"
        );
        assert_eq!(d.string_literal("  lead"), "'  lead'");
        assert_eq!(d.string_literal("trail  "), "'trail' || '  '");
        assert_eq!(d.string_literal("a\\"), "'a' || chr(92)");
        assert_eq!(d.string_literal("\\\\"), "chr(92) || chr(92)");
        assert_eq!(d.string_literal("a\\ b"), "'a' || '\\ b'");
        assert_eq!(d.string_literal("\\ b"), "'\\ b'");
        assert_eq!(d.string_literal("it's \\'"), "'it''s' || ' \\'''");
        assert_eq!(
            d.table_ref(&Ident::table("events").unwrap()),
            "tenant.events"
        );
        assert_eq!(
            d.time_literal(UnixMicros(1_795_608_000_000_001)),
            "'2026-11-25 12:00:00.000001'"
        );
    }

    #[test]
    fn like_escaping() {
        assert_eq!(like_contains("50%_off!"), "%50!%!_off!!%");
        assert_eq!(like_contains("a\\b"), "%a\\b%");
    }
}
