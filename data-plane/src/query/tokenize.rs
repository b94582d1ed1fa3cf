//! Test support: a small SQL tokenizer for structural comparisons, and
//! models of the two regex passes Arc runs over query text (its literal
//! masker and its dangerous-statement guard).

/// A token. Keywords and identifiers are lower-cased words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Word(String),
    Num(String),
    /// A string expression's value: a literal, or literals and `chr(92)`
    /// joined by `||` once [`normalize`]d.
    Str(String),
    /// A double-quoted identifier.
    Quoted(String),
    Punct(String),
}

/// Splits `sql` into tokens; an unterminated literal or a comment is an
/// error (the builder emits neither).
pub(crate) fn tokenize(sql: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let mut value = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated {c} literal")),
                    Some(&q) if q == c && chars.get(i + 1) == Some(&c) => {
                        value.push(c);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        value.push(other);
                        i += 1;
                    }
                }
            }
            out.push(if c == '\'' {
                Tok::Str(value)
            } else {
                Tok::Quoted(value)
            });
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(Tok::Word(word.to_ascii_lowercase()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                let exp = matches!(chars[i], 'e' | 'E');
                i += 1;
                if exp && matches!(chars.get(i), Some('-' | '+')) {
                    i += 1;
                }
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if (c == '-' && next == Some('-')) || (c == '/' && next == Some('*')) {
            return Err("comment".into());
        } else {
            let two: String = [c, next.unwrap_or(' ')].iter().collect();
            if matches!(two.as_str(), "||" | "<=" | ">=" | "<>" | "!=") {
                out.push(Tok::Punct(two));
                i += 2;
            } else {
                out.push(Tok::Punct(c.to_string()));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Folds `chr(92)` into a one-backslash string and merges string operands
/// joined by `||` into one [`Tok::Str`], so a value written in pieces (Arc)
/// and in one literal (embedded) compare equal.
pub(crate) fn normalize(tokens: Vec<Tok>) -> Vec<Tok> {
    let punct = |t: &Tok, p: &str| matches!(t, Tok::Punct(x) if x == p);
    let mut folded = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let is_chr = matches!(&tokens[i], Tok::Word(w) if w == "chr")
            && tokens.get(i + 1).is_some_and(|t| punct(t, "("))
            && tokens.get(i + 2) == Some(&Tok::Num("92".into()))
            && tokens.get(i + 3).is_some_and(|t| punct(t, ")"));
        if is_chr {
            folded.push(Tok::Str("\\".into()));
            i += 4;
        } else {
            folded.push(tokens[i].clone());
            i += 1;
        }
    }
    let mut out: Vec<Tok> = Vec::new();
    let mut i = 0;
    while i < folded.len() {
        if let (Some(Tok::Str(prev)), Some(t), Some(Tok::Str(next))) =
            (out.last_mut(), folded.get(i), folded.get(i + 1))
            && punct(t, "||")
        {
            prev.push_str(next);
            i += 2;
            continue;
        }
        out.push(folded[i].clone());
        i += 1;
    }
    out
}

/// The statement's structure: string values blanked.
pub(crate) fn shape(tokens: &[Tok]) -> Vec<Tok> {
    tokens
        .iter()
        .map(|t| match t {
            Tok::Str(_) => Tok::Str(String::new()),
            other => other.clone(),
        })
        .collect()
}

/// The decoded string values, in order.
pub(crate) fn strings(tokens: &[Tok]) -> Vec<String> {
    tokens
        .iter()
        .filter_map(|t| match t {
            Tok::Str(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// Byte spans of single-quoted literals, read correctly (`''` escapes).
pub(crate) fn literal_spans(sql: &str) -> Vec<(usize, usize)> {
    let b = sql.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\'' {
            let start = i;
            i += 1;
            while i < b.len() {
                if b[i] == b'\'' && b.get(i + 1) == Some(&b'\'') {
                    i += 2;
                } else if b[i] == b'\'' {
                    break;
                } else {
                    i += 1;
                }
            }
            i += 1;
            spans.push((start, i.min(b.len())));
        } else {
            i += 1;
        }
    }
    spans
}

/// Byte spans Arc's `MaskStringLiterals` masks (Go, `internal/sql`): `'`
/// and `"` literals, `''`/`""` escapes, and a quote preceded by a backslash
/// taken as escaped too.
pub(crate) fn arc_mask_spans(sql: &str) -> Vec<(usize, usize)> {
    let b = sql.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let quote = b[i];
        if quote != b'\'' && quote != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < b.len() {
            if b[i] == quote {
                if b.get(i + 1) == Some(&quote) {
                    i += 2;
                    continue;
                }
                if b[i - 1] == b'\\' {
                    i += 1;
                    continue;
                }
                break;
            }
            i += 1;
        }
        if i < b.len() {
            i += 1;
        }
        spans.push((start, i));
    }
    spans
}

/// Whether Arc's guard (`dangerousSQLPatterns`, matched against the raw
/// SQL) would refuse `sql`: `DROP\s+(TABLE|DATABASE|INDEX|VIEW)\b`,
/// `DELETE\s+FROM\b`, `TRUNCATE\s+TABLE\b`, `ALTER\s+TABLE\b`,
/// `CREATE\s+(TABLE|DATABASE|INDEX)\b`, `INSERT\s+INTO\b`,
/// `UPDATE\s+\w+\s+SET\b`, all case-insensitive with `\b` before the first
/// word.
pub(crate) fn arc_guard_trips(sql: &str) -> bool {
    // Runs of word bytes, runs of whitespace, single other bytes.
    #[derive(PartialEq)]
    enum Run {
        Word(String),
        Space,
        Other,
    }
    let b = sql.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if word(b[i]) {
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            runs.push(Run::Word(sql[start..i].to_ascii_lowercase()));
        } else if b[i].is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            runs.push(Run::Space);
        } else {
            runs.push(Run::Other);
            i += 1;
        }
    }
    let is = |r: Option<&Run>, words: &[&str]| matches!(r, Some(Run::Word(w)) if words.is_empty() || words.contains(&w.as_str()));
    let pairs: [(&str, &[&str]); 7] = [
        ("drop", &["table", "database", "index", "view"]),
        ("delete", &["from"]),
        ("truncate", &["table"]),
        ("alter", &["table"]),
        ("create", &["table", "database", "index"]),
        ("insert", &["into"]),
        ("update", &[]),
    ];
    (0..runs.len()).any(|k| {
        pairs.iter().any(|(first, second)| {
            is(runs.get(k), &[first])
                && runs.get(k + 1) == Some(&Run::Space)
                && is(runs.get(k + 2), second)
                && (*first != "update"
                    || (runs.get(k + 3) == Some(&Run::Space) && is(runs.get(k + 4), &["set"])))
        })
    })
}

#[test]
fn models_behave_like_arc() {
    assert!(arc_guard_trips("SELECT 1 WHERE x = 'drop  TABLE y'"));
    assert!(arc_guard_trips("update t set x = 1"));
    assert!(!arc_guard_trips("SELECT 'drop' || ' table'"));
    assert!(!arc_guard_trips("SELECT dropped tables"));
    assert_eq!(literal_spans("a 'x''y' b 'c\\'"), vec![(2, 8), (11, 15)]);
    // Arc's masker runs past a literal ending in a backslash.
    assert_eq!(arc_mask_spans("'c\\' || 'd'"), vec![(0, 9), (10, 11)]);
    assert_eq!(
        normalize(tokenize("'a' || chr(92) || ' b', ',' || m.x").unwrap()),
        tokenize("'a\\ b', ',' || m.x").unwrap()
    );
}
