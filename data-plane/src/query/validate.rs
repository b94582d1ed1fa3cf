//! Validated inputs. Each type's constructor enforces one rule of the
//! original memtrace (its regexes are quoted in the error text) and names the
//! request field when it refuses a value; once built, a value is safe to
//! render by [`Dialect`](super::Dialect) escaping alone.

use super::QueryError;
use memtrace_common::names;
use std::fmt;

/// The original's id rule (agent and session ids, state row ids).
pub const ID_RULE: &str = "must match ^[a-zA-Z][a-zA-Z0-9_-]{0,127}$";
/// The original's type rule (event types; memory types are a closed set).
pub const TYPE_RULE: &str = "must match ^[a-zA-Z][a-zA-Z0-9_]{0,63}$";
/// The original's tag rule.
pub const TAG_RULE: &str = "must match ^[a-zA-Z0-9_.\\-]{1,64}$";
const MEMORY_ID_RULE: &str =
    "must be a UUID (8-4-4-4-12 hex digits) or match ^[a-zA-Z][a-zA-Z0-9_-]{0,127}$";
const MEMORY_TYPE_RULE: &str = "must be one of episodic|session|decision|entity";

fn is_id(s: &str) -> bool {
    let bytes = s.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_alphabetic())
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

fn is_type(s: &str) -> bool {
    let bytes = s.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_alphabetic())
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

fn is_tag(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A canonical hyphenated UUID of any version (our memory ids are UUIDv7).
fn is_uuid(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:expr, $rule:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The request field this value is read from, as errors name it.
            pub const FIELD: &'static str = $field;

            /// Validates `value`.
            pub fn parse(value: &str) -> Result<Self, QueryError> {
                let check: fn(&str) -> bool = $check;
                if check(value) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(QueryError::invalid($field, $rule))
                }
            }

            /// Validates `value`, keeping its allocation.
            pub fn parse_owned(value: String) -> Result<Self, QueryError> {
                let check: fn(&str) -> bool = $check;
                if check(&value) {
                    Ok(Self(value))
                } else {
                    Err(QueryError::invalid($field, $rule))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = QueryError;
            fn try_from(value: &str) -> Result<Self, QueryError> {
                Self::parse(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// A memory's `agent_id` filter.
    AgentId, "agent_id", is_id, ID_RULE
);
string_newtype!(
    /// A memory's `session_id` filter.
    SessionId, "session_id", is_id, ID_RULE
);
string_newtype!(
    /// The `id` of an agent or session state row.
    StateId, "id", is_id, ID_RULE
);
string_newtype!(
    /// A memory id: ours are UUIDv7 strings (which may start with a digit, so
    /// the id rule alone would refuse them); the id rule is accepted too.
    MemoryId, "id", |s| is_uuid(s) || is_id(s), MEMORY_ID_RULE
);
string_newtype!(
    /// An `event_type` filter value.
    EventType, "event_type", is_type, TYPE_RULE
);
string_newtype!(
    /// One tag; matched as a whole element of `tags_csv`.
    Tag, "tags", is_tag, TAG_RULE
);

/// The closed set of memory types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemoryType {
    Episodic,
    Session,
    Decision,
    Entity,
}

impl MemoryType {
    pub const FIELD: &'static str = "memory_type";

    /// Validates `value` (the type rule first, then the closed set).
    pub fn parse(value: &str) -> Result<Self, QueryError> {
        if !is_type(value) {
            return Err(QueryError::invalid(Self::FIELD, TYPE_RULE));
        }
        match value {
            "episodic" => Ok(Self::Episodic),
            "session" => Ok(Self::Session),
            "decision" => Ok(Self::Decision),
            "entity" => Ok(Self::Entity),
            _ => Err(QueryError::invalid(Self::FIELD, MEMORY_TYPE_RULE)),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Episodic => "episodic",
            Self::Session => "session",
            Self::Decision => "decision",
            Self::Entity => "entity",
        }
    }
}

impl TryFrom<&str> for MemoryType {
    type Error = QueryError;
    fn try_from(value: &str) -> Result<Self, QueryError> {
        Self::parse(value)
    }
}

impl fmt::Display for MemoryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SQL identifier: an Arc database, a table (Arc measurement or embedded
/// table) or a column. Arc names may also contain `-`, but Arc's own
/// `FROM db.m` rewriter only matches `[a-zA-Z0-9_]`, and quoting a name hides
/// it from that rewriter, so hyphens are refused (by the shared rule, so the
/// control plane refuses them too).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// The table of superseded memory versions (`memory_versions`).
    pub fn versions_table() -> Self {
        Self(crate::store::VERSIONS_TABLE.to_owned())
    }

    /// The table of delivered erasure receipts (`erasure_receipts`).
    pub fn receipts_table() -> Self {
        Self(crate::store::RECEIPTS_TABLE.to_owned())
    }

    /// An Arc database name ([`memtrace_common::names`]: the rule the
    /// control plane applies before it stores a binding).
    pub fn database(value: &str) -> Result<Self, QueryError> {
        names::check_arc_database(value)?;
        Ok(Self(value.to_owned()))
    }

    /// A table: an Arc measurement, or an embedded table (same rule).
    pub fn table(value: &str) -> Result<Self, QueryError> {
        names::check_arc_measurement(value)?;
        Ok(Self(value.to_owned()))
    }

    /// A column name: `^[a-z_][a-z0-9_]{0,63}$`.
    pub fn column(value: &str) -> Result<Self, QueryError> {
        let bytes = value.as_bytes();
        let ok = matches!(bytes.first(), Some(b) if b.is_ascii_lowercase() || *b == b'_')
            && bytes.len() <= 64
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(QueryError::invalid(
                "column",
                "must match ^[a-z_][a-z0-9_]{0,63}$",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Drops NUL characters, which neither engine stores in text.
pub(crate) fn strip_nul(value: &str) -> String {
    value.chars().filter(|c| *c != '\0').collect()
}

/// The text a search must contain (case-insensitively). NULs are dropped;
/// empty means "no filter" and is represented by `None` upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentPattern(String);

impl ContentPattern {
    pub const FIELD: &'static str = "content_contains";
    /// Longest accepted pattern, in characters (keeps a search under Arc's
    /// SQL size limit with every other filter at its maximum).
    pub const MAX_CHARS: usize = 512;

    /// `Ok(None)` for an empty (or all-NUL) value.
    pub fn parse(value: &str) -> Result<Option<Self>, QueryError> {
        let value = strip_nul(value);
        if value.is_empty() {
            return Ok(None);
        }
        if value.chars().count() > Self::MAX_CHARS {
            return Err(QueryError::invalid(Self::FIELD, "at most 512 characters"));
        }
        Ok(Some(Self(value)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A dedup key to look up. The original never validated keys (auto keys are
/// 32 hex characters); we bound the length so one key always fits a query,
/// and the write path must refuse longer keys with the same rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey(String);

impl DedupKey {
    pub const FIELD: &'static str = "dedup_key";
    /// Longest accepted key, in bytes.
    pub const MAX_BYTES: usize = 256;

    /// Refuses an empty (after NUL removal) or over-long key.
    pub fn parse(value: &str) -> Result<Self, QueryError> {
        let value = strip_nul(value);
        if value.is_empty() || value.len() > Self::MAX_BYTES {
            return Err(QueryError::invalid(Self::FIELD, "must be 1 to 256 bytes"));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for DedupKey {
    type Error = QueryError;
    fn try_from(value: &str) -> Result<Self, QueryError> {
        Self::parse(value)
    }
}

/// A page size, 1..=1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u32);

impl Limit {
    pub const MAX: u32 = 1000;
    pub const LIST_DEFAULT: Self = Self(100);
    pub const SEARCH_DEFAULT: Self = Self(50);
    /// The session context reads the newest 100 memories, as the original.
    pub const CONTEXT: Self = Self(100);

    /// As the original: absent, `<= 0` or `> 1000` give `default`.
    pub fn or_default(requested: Option<i64>, default: Self) -> Self {
        match requested {
            Some(n) if n > 0 && n <= i64::from(Self::MAX) => Self(n as u32),
            _ => default,
        }
    }

    /// A list page size (default 100).
    pub fn list(requested: Option<i64>) -> Self {
        Self::or_default(requested, Self::LIST_DEFAULT)
    }

    /// A search page size (default 50).
    pub fn search(requested: Option<i64>) -> Self {
        Self::or_default(requested, Self::SEARCH_DEFAULT)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// The deepest `offset` a read accepts. A page that deep already costs the
/// store a scan of every row ahead of it (reads collapse duplicates over
/// them), and a huge offset used to reach the store and come back as a 502;
/// deeper reads narrow `since`/`until` instead.
pub const MAX_OFFSET: u64 = 100_000;
/// The rule an `offset` must follow.
const OFFSET_RULE: &str = "must be between 0 and 100000";

/// Parses an `offset`: absent is 0; negative or past [`MAX_OFFSET`] is
/// refused before any store sees it.
pub fn parse_offset(requested: Option<i64>) -> Result<u64, QueryError> {
    match requested.map(u64::try_from) {
        None => Ok(0),
        Some(Ok(n)) if n <= MAX_OFFSET => Ok(n),
        Some(_) => Err(QueryError::invalid("offset", OFFSET_RULE)),
    }
}

/// Result order by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    /// Newest first, the original's default.
    #[default]
    Desc,
}

impl Order {
    /// `asc` or `desc` (any case); absent or empty is `desc`.
    pub fn parse(value: Option<&str>) -> Result<Self, QueryError> {
        match value {
            None => Ok(Self::Desc),
            Some(v) if v.is_empty() || v.eq_ignore_ascii_case("desc") => Ok(Self::Desc),
            Some(v) if v.eq_ignore_ascii_case("asc") => Ok(Self::Asc),
            Some(_) => Err(QueryError::invalid("order", "must be asc or desc")),
        }
    }

    pub(crate) fn sql(self) -> &'static str {
        match self {
            Self::Asc => "ASC",
            Self::Desc => "DESC",
        }
    }
}
