//! The session context markdown, as the original renders it:
//!
//! ```text
//! ## Session Context (<session id>)
//!
//! ### Recent Actions (n)      episodic
//! ### Decisions Made (n)      decision
//! ### Errors (n)              other types with event_type "error"
//! ### Other (n)               everything else
//! - [<time>] <event_type>: <content, cut at 80 bytes on a character boundary>...
//! ```
//!
//! Memories arrive newest first and keep that order within a section; empty
//! sections are left out. Unlike the original, `max_tokens` is honoured
//! (≈ 4 bytes per token): memories are added newest first while the whole
//! text stays within the budget, and `memory_count` counts those included.

use super::types::Memory;

/// Bytes of content shown per line before `...`.
pub const CONTENT_CUT_BYTES: usize = 80;
/// Bytes per token when applying `max_tokens`.
pub const BYTES_PER_TOKEN: u64 = 4;

const SECTIONS: [&str; 4] = ["Recent Actions", "Decisions Made", "Errors", "Other"];

fn section_of(m: &Memory) -> usize {
    match m.memory_type.as_str() {
        "episodic" => 0,
        "decision" => 1,
        _ if m.event_type == "error" => 2,
        _ => 3,
    }
}

/// `s` cut to at most `max` bytes without splitting a character.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn line(m: &Memory) -> String {
    let content = cut(&m.content, CONTENT_CUT_BYTES);
    let more = if content.len() < m.content.len() {
        "..."
    } else {
        ""
    };
    format!("- [{}] {}: {content}{more}\n", m.time, m.event_type)
}

fn assemble(session_id: &str, sections: &[Vec<String>; 4]) -> String {
    let mut out = format!("## Session Context ({session_id})\n");
    for (name, lines) in SECTIONS.iter().zip(sections) {
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("\n### {name} ({})\n", lines.len()));
        for l in lines {
            out.push_str(l);
        }
    }
    out
}

/// The markdown and how many memories it holds.
pub fn render(session_id: &str, memories: &[Memory], max_tokens: Option<u64>) -> (String, usize) {
    let budget = max_tokens
        .map(|t| usize::try_from(t.saturating_mul(BYTES_PER_TOKEN)).unwrap_or(usize::MAX));
    let mut sections: [Vec<String>; 4] = Default::default();
    let mut count = 0;
    let mut size = assemble(session_id, &sections).len();
    for m in memories {
        let s = section_of(m);
        let l = line(m);
        // a new section adds its header; a count going up a digit adds a byte
        let header = if sections[s].is_empty() {
            format!("\n### {} (1)\n", SECTIONS[s]).len()
        } else {
            1
        };
        if budget.is_some_and(|b| size + l.len() + header > b) {
            break;
        }
        size += l.len() + header;
        sections[s].push(l);
        count += 1;
    }
    (assemble(session_id, &sections), count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(memory_type: &str, event_type: &str, content: &str) -> Memory {
        Memory {
            id: "mem_1".into(),
            time: "2026-01-01T00:00:00Z".into(),
            org_id: "org_a".into(),
            agent_id: "a".into(),
            session_id: "sess_1".into(),
            memory_type: memory_type.into(),
            event_type: event_type.into(),
            content: content.into(),
            metadata: None,
            tags: Vec::new(),
            dedup_key: String::new(),
            importance: 0.0,
            parent_id: String::new(),
            expires_at: None,
        }
    }

    #[test]
    fn sections_and_utf8_safe_cut() {
        let long = "é".repeat(60); // 120 bytes
        let memories = vec![
            memory("episodic", "general", "did a thing"),
            memory("decision", "decision", "chose b"),
            memory("session", "error", "boom"),
            memory("entity", "general", &long),
        ];
        let (md, n) = render("sess_1", &memories, None);
        assert_eq!(n, 4);
        assert!(md.starts_with("## Session Context (sess_1)\n"), "{md}");
        assert!(
            md.contains("### Recent Actions (1)\n- [2026-01-01T00:00:00Z] general: did a thing\n")
        );
        assert!(md.contains("### Decisions Made (1)\n"));
        assert!(md.contains("### Errors (1)\n- [2026-01-01T00:00:00Z] error: boom\n"));
        assert!(md.contains(&format!(
            "### Other (1)\n- [2026-01-01T00:00:00Z] general: {}...\n",
            "é".repeat(40)
        )));
        assert_eq!(cut("aé", 2), "a");
    }

    #[test]
    fn max_tokens_bounds_the_text() {
        let memories: Vec<Memory> = (0..50)
            .map(|i| {
                memory(
                    "episodic",
                    "general",
                    &format!("step {i} {}", "x".repeat(60)),
                )
            })
            .collect();
        let (md, n) = render("sess_1", &memories, Some(100));
        assert!(md.len() <= 400, "{}", md.len());
        assert!(n > 0 && n < 50);
        assert!(md.contains(&format!("### Recent Actions ({n})")));
        let (all, n_all) = render("sess_1", &memories, None);
        assert_eq!(n_all, 50);
        assert!(all.len() > md.len());
    }
}
