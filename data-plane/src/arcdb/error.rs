//! What can go wrong talking to Arc, and which of it is worth retrying.
//!
//! No variant ever carries the Arc key: requests carry it only in a
//! sensitive header, and transport errors are rendered without their URL's
//! query or credentials (reqwest errors are stripped of the URL).

/// Longest Arc error message kept (Arc echoes SQL back in some errors).
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

/// A failed Arc call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArcError {
    /// No HTTP answer: connect failure, reset, or a connect/request timeout.
    #[error("arc unreachable ({kind}): {detail}")]
    Unreachable { kind: Transport, detail: String },
    /// Arc refused the request (400, 401, 403, 404, 413, 429, ...): sending
    /// it again will not help.
    #[error("arc rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// Arc failed (5xx). Retryable.
    #[error("arc server error ({status}): {message}")]
    Server { status: u16, message: String },
    /// Arc answered 2xx with a body we cannot read, or a query reply with
    /// `success: false`.
    #[error("arc reply not understood: {0}")]
    Decode(String),
    /// The target cannot be addressed (bad URL, key not a header value).
    #[error("arc target invalid: {0}")]
    InvalidTarget(String),
    /// A query's reply is larger than one read may be: the request asked
    /// for too much at once.
    #[error(
        "the reply to this read exceeds {max} bytes; ask for fewer memories (limit) or narrower filters"
    )]
    ReplyTooLarge { max: usize },
    /// The worker's reads hold as many reply bytes as it allows; retry.
    #[error("the worker is reading as much as it may hold at once; retry shortly")]
    ReplyBudget,
    /// Arc refused a delete with 403: deletes are disabled in its config,
    /// or the token lacks the `delete` permission. The erasure it served is
    /// blocked for that reason until an operator changes Arc; retrying
    /// does not help.
    #[error("arc refused the delete ({reason}): {message}")]
    DeleteBlocked {
        reason: DeleteBlock,
        message: String,
    },
}

/// Why Arc refused a delete (see [`ArcError::DeleteBlocked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteBlock {
    /// Arc's `delete.enabled` is off ("Delete operations are disabled…").
    DeletesDisabled,
    /// The token lacks the `delete` permission (for this database).
    NoDeletePermission,
}

impl DeleteBlock {
    /// From the message of Arc's 403 to a delete: its "disabled" message,
    /// else a permission refusal (the auth middleware's or the database
    /// check's).
    pub fn from_message(message: &str) -> Self {
        if message.to_ascii_lowercase().contains("disabled") {
            Self::DeletesDisabled
        } else {
            Self::NoDeletePermission
        }
    }
}

impl std::fmt::Display for DeleteBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::DeletesDisabled => "deletes disabled",
            Self::NoDeletePermission => "token lacks delete permission",
        })
    }
}

/// Why there was no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Connect,
    Timeout,
    Other,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Other => "transport",
        })
    }
}

impl ArcError {
    /// True for connection errors, timeouts and 5xx — the failures another
    /// attempt may cure. Never for 4xx: a bad body, bad token or missing
    /// permission fails the same way again.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Server { .. } => true,
            Self::Rejected { .. }
            | Self::Decode(_)
            | Self::InvalidTarget(_)
            | Self::ReplyTooLarge { .. }
            | Self::ReplyBudget
            | Self::DeleteBlocked { .. } => false,
        }
    }

    /// The HTTP status Arc answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. } | Self::Server { status, .. } => Some(*status),
            Self::DeleteBlocked { .. } => Some(403),
            _ => None,
        }
    }

    /// True when the request did not finish in time.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::Unreachable {
                kind: Transport::Timeout,
                ..
            }
        )
    }

    /// Classifies a non-success status with Arc's message.
    pub(crate) fn from_status(status: u16, message: String) -> Self {
        if status >= 500 {
            Self::Server { status, message }
        } else {
            Self::Rejected { status, message }
        }
    }

    /// Classifies a reqwest error (its URL removed).
    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            Transport::Timeout
        } else if e.is_connect() {
            Transport::Connect
        } else {
            Transport::Other
        };
        if e.is_builder() {
            return Self::InvalidTarget(error_chain(&e.without_url()));
        }
        Self::Unreachable {
            kind,
            detail: error_chain(&e.without_url()),
        }
    }
}

/// `e: cause: cause` (reqwest's own Display omits the causes).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    truncate(s)
}

/// Arc's message from an error body: `{"error": ...}` (Go),
/// `{"detail": ...}` (Python), else the text itself; at most
/// [`MAX_MESSAGE_BYTES`].
pub(crate) fn arc_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["error", "detail", "message"]
                .iter()
                .find_map(|k| match v.get(*k) {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Null) | None => None,
                    Some(other) => Some(other.to_string()),
                })
        });
    let msg = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    truncate(msg)
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_go_python_and_text_bodies() {
        assert_eq!(arc_message(br#"{"error":"bad token"}"#), "bad token");
        assert_eq!(
            arc_message(br#"{"success":false,"error":"Query execution failed"}"#),
            "Query execution failed"
        );
        assert_eq!(arc_message(br#"{"detail":"nope"}"#), "nope");
        assert_eq!(arc_message(b" plain text \n"), "plain text");
        let long = "é".repeat(2000);
        assert!(arc_message(long.as_bytes()).len() <= MAX_MESSAGE_BYTES + 3);
    }

    #[test]
    fn delete_refusals_say_why() {
        let disabled =
            "Delete operations are disabled. Set delete.enabled=true in arc.toml to enable.";
        assert_eq!(
            DeleteBlock::from_message(disabled),
            DeleteBlock::DeletesDisabled
        );
        for m in [
            "Permission denied: delete required",
            "access denied: no delete permission for database 'acme'",
            "Admin access required",
        ] {
            assert_eq!(
                DeleteBlock::from_message(m),
                DeleteBlock::NoDeletePermission,
                "{m}"
            );
        }
    }

    #[test]
    fn only_transport_and_5xx_are_retryable() {
        for s in [400, 401, 403, 404, 413, 429] {
            assert!(!ArcError::from_status(s, String::new()).retryable(), "{s}");
        }
        for s in [500, 502, 503, 504, 507] {
            assert!(ArcError::from_status(s, String::new()).retryable(), "{s}");
        }
        let e = ArcError::Unreachable {
            kind: Transport::Timeout,
            detail: String::new(),
        };
        assert!(e.retryable() && e.is_timeout());
        let blocked = ArcError::DeleteBlocked {
            reason: DeleteBlock::DeletesDisabled,
            message: String::new(),
        };
        assert!(!blocked.retryable());
        assert_eq!(blocked.status(), Some(403));
        assert!(!ArcError::Decode(String::new()).retryable());
    }
}
