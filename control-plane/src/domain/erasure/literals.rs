//! Arc refuses a delete whose `where` text holds `;`, `--`, `/*`, `xp_`,
//! `sp_` or an SQL keyword as a word (`DROP`, `SELECT`, `SET`, `UPDATE`,
//! …) anywhere — string literals included — so a tenant's delete by tag
//! `set` or by agent `drop-bot` would fail at every attempt. Before a
//! predicate goes to Arc's delete API, each string literal that would trip
//! those checks is written as a concatenation of `chr(<code point>)`
//! (DuckDB's `chr`), which matches the same rows and holds no such text.
//! Other literals and everything outside literals stay as they are.

use regex::Regex;
use std::sync::LazyLock;

static KEYWORD: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(DROP|DELETE|INSERT|UPDATE|EXEC|EXECUTE|UNION|SELECT|CREATE|ALTER|COPY|ATTACH|DETACH|LOAD|INSTALL|PRAGMA|CALL|SET|TRUNCATE)\b",
    )
    .ok()
});

/// Whether Arc's delete checks would refuse `text` if it appeared in a
/// `where`.
fn trips_arc(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    [";", "--", "/*", "*/", "XP_", "SP_"]
        .iter()
        .any(|p| upper.contains(p))
        || KEYWORD.as_ref().is_none_or(|k| k.is_match(text))
}

/// `predicate` with every literal Arc's delete would refuse spelled with
/// `chr(..)`.
pub(crate) fn for_arc_delete(predicate: &str) -> String {
    let mut out = String::with_capacity(predicate.len());
    let mut rest = predicate;
    while let Some(start) = rest.find('\'') {
        out.push_str(&rest[..start]);
        let body = &rest[start + 1..];
        // the literal ends at a quote not doubled
        let mut end = None;
        let mut i = 0;
        let bytes = body.as_bytes();
        while i < bytes.len() {
            if bytes[i] == b'\'' {
                if bytes.get(i + 1) == Some(&b'\'') {
                    i += 2;
                    continue;
                }
                end = Some(i);
                break;
            }
            i += 1;
        }
        let Some(end) = end else {
            // unbalanced: leave it to Arc to refuse
            out.push_str(&rest[start..]);
            return out;
        };
        let value = body[..end].replace("''", "'");
        if value.is_empty() || !trips_arc(&value) {
            out.push_str(&rest[start..start + end + 2]);
        } else {
            let chars: Vec<String> = value
                .chars()
                .map(|c| format!("chr({})", u32::from(c)))
                .collect();
            out.push('(');
            out.push_str(&chars.join(" || "));
            out.push(')');
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_literals_arc_would_refuse_are_spelled_out() {
        assert_eq!(
            for_arc_delete("agent_id = 'a1' AND id IN ('m1', 'm2')"),
            "agent_id = 'a1' AND id IN ('m1', 'm2')"
        );
        assert_eq!(
            for_arc_delete("instr(',' || tags_csv || ',', ',set,') > 0"),
            "instr(',' || tags_csv || ',', (chr(44) || chr(115) || chr(101) || chr(116) || chr(44))) > 0"
        );
        assert_eq!(
            for_arc_delete("agent_id = 'wasp_1' AND x = 'it''s'"),
            "agent_id = (chr(119) || chr(97) || chr(115) || chr(112) || chr(95) || chr(49)) AND x = 'it''s'"
        );
        // a quote inside a spelled-out literal is a character like any other
        assert_eq!(
            for_arc_delete("a = 'drop''s'"),
            "a = (chr(100) || chr(114) || chr(111) || chr(112) || chr(39) || chr(115))"
        );
        assert_eq!(for_arc_delete("a = 'open"), "a = 'open");
        for refused in ["set", "Drop-bot", "x;y", "a--b", "gasp_", "update"] {
            assert!(trips_arc(refused), "{refused}");
        }
        for fine in ["settings", "dropped", "a_b", "mem_update_1"] {
            assert!(!trips_arc(fine), "{fine}");
        }
    }
}
