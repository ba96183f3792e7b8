//! Rejections: every bad input gets one reason code of docs/design.md §8 and a human message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an input was refused, one-to-one with the reason codes of the design (§8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectCode {
    /// Not valid JSON, a field of the wrong type, or an id that is not a token.
    Malformed,
    /// A field the message type does not have.
    UnknownField,
    /// A resource the market does not sell.
    UnknownResource,
    /// A share outside `(0, 1]` or with more than six decimals.
    InvalidShare,
    /// A bundle naming no resource.
    EmptyBundle,
    /// A duration of zero slots or longer than the horizon.
    InvalidDuration,
    /// A window that cannot hold the duration, or has already passed.
    InvalidWindow,
    /// A window ending past `now + horizon`.
    BeyondHorizon,
    /// An amount that is negative, zero where something is needed, or has more than six decimals.
    InvalidAmount,
    /// A limit below the bundle's cost at reserve prices.
    BelowReserve,
    /// An agent without an account.
    UnknownAgent,
    /// More than the agent's available credits.
    InsufficientCredits,
    /// The agent already holds `max_bids_per_agent` live bids.
    TooManyBids,
    /// The book holds `book_size` live bids.
    BookFull,
    /// No such bid.
    NotFound,
    /// The bid has already won, lost, expired or been cancelled.
    NotPending,
    /// Acting for another agent, or an operation that is not the caller's to ask for (an
    /// operator's clearing while the clearing loop runs).
    Forbidden,
    /// The service cannot make an answer durable now (its journal or audit log is not
    /// acknowledging); nothing was done: retry later.
    Unavailable,
    /// The service failed inside; not the caller's fault, and nothing was done.
    Internal,
}

impl RejectCode {
    /// Every code, in the order of the design.
    pub const ALL: [RejectCode; 19] = [
        RejectCode::Malformed,
        RejectCode::UnknownField,
        RejectCode::UnknownResource,
        RejectCode::InvalidShare,
        RejectCode::EmptyBundle,
        RejectCode::InvalidDuration,
        RejectCode::InvalidWindow,
        RejectCode::BeyondHorizon,
        RejectCode::InvalidAmount,
        RejectCode::BelowReserve,
        RejectCode::UnknownAgent,
        RejectCode::InsufficientCredits,
        RejectCode::TooManyBids,
        RejectCode::BookFull,
        RejectCode::NotFound,
        RejectCode::NotPending,
        RejectCode::Forbidden,
        RejectCode::Unavailable,
        RejectCode::Internal,
    ];

    /// The code as written on the wire (`"insufficient_credits"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectCode::Malformed => "malformed",
            RejectCode::UnknownField => "unknown_field",
            RejectCode::UnknownResource => "unknown_resource",
            RejectCode::InvalidShare => "invalid_share",
            RejectCode::EmptyBundle => "empty_bundle",
            RejectCode::InvalidDuration => "invalid_duration",
            RejectCode::InvalidWindow => "invalid_window",
            RejectCode::BeyondHorizon => "beyond_horizon",
            RejectCode::InvalidAmount => "invalid_amount",
            RejectCode::BelowReserve => "below_reserve",
            RejectCode::UnknownAgent => "unknown_agent",
            RejectCode::InsufficientCredits => "insufficient_credits",
            RejectCode::TooManyBids => "too_many_bids",
            RejectCode::BookFull => "book_full",
            RejectCode::NotFound => "not_found",
            RejectCode::NotPending => "not_pending",
            RejectCode::Forbidden => "forbidden",
            RejectCode::Unavailable => "unavailable",
            RejectCode::Internal => "internal",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused input: its reason code and a message for humans. Nothing was changed.
///
/// # Examples
///
/// ```
/// use capacity_auction::{RejectCode, Rejection};
///
/// let r = Rejection::new(RejectCode::BookFull, "the book holds 10 live bids");
/// assert_eq!(r.to_string(), "book_full: the book holds 10 live bids");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// The reason code.
    pub code: RejectCode,
    /// What was wrong, for humans; at most [`Rejection::MAX_MESSAGE`] bytes when made by [`Rejection::new`].
    pub message: String,
}

impl Rejection {
    /// The longest message a rejection carries, in bytes: messages quote what was refused, and
    /// a refusal is echoed into an event and a reply, so a huge input must not make either huge.
    pub const MAX_MESSAGE: usize = 256;

    /// A rejection with `code` and `message`, cut to [`Rejection::MAX_MESSAGE`] bytes (on a character
    /// boundary, ending in `…` when cut).
    pub fn new(code: RejectCode, message: impl Into<String>) -> Rejection {
        Rejection { code, message: clip_message(message.into()) }
    }

    /// The rejection of a JSON payload that failed to decode: `unknown_field` when serde named a
    /// field the type lacks, `malformed` otherwise.
    pub fn from_json(err: &serde_json::Error) -> Rejection {
        let message = err.to_string();
        let code = if message.starts_with("unknown field") {
            RejectCode::UnknownField
        } else {
            RejectCode::Malformed
        };
        Rejection::new(code, message)
    }
}

/// `message` cut to [`Rejection::MAX_MESSAGE`] bytes, `…` included.
fn clip_message(mut message: String) -> String {
    if message.len() > Rejection::MAX_MESSAGE {
        let mut at = Rejection::MAX_MESSAGE - '…'.len_utf8();
        while !message.is_char_boundary(at) {
            at -= 1;
        }
        message.truncate(at);
        message.push('…');
    }
    message
}

/// The result of an operation that may be refused.
pub type Result<T, E = Rejection> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let r = Rejection::new(RejectCode::Malformed, "é".repeat(1000));
        assert!(r.message.len() <= Rejection::MAX_MESSAGE, "{}", r.message.len());
        assert!(r.message.ends_with('…'));
        assert!(r.message.starts_with("éé"));
        let short = Rejection::new(RejectCode::Malformed, "short");
        assert_eq!(short.message, "short");
    }
}
