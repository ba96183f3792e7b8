//! [`AgentId`] and [`BidId`]: names checked once, shared cheaply afterwards.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::capacity::is_token;

/// An id that is not 1 to 64 of `[A-Za-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not 1 to 64 of [A-Za-z0-9_-]")]
pub struct IdError(pub String);

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id `s`.
            ///
            /// # Errors
            ///
            /// When `s` is not 1 to 64 of `[A-Za-z0-9_-]`.
            pub fn new(s: &str) -> Result<$name, IdError> {
                if is_token(s) { Ok($name(s.into())) } else { Err(IdError(s.to_owned())) }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<$name, IdError> {
                $name::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

token_id! {
    /// An account holder and bidder: `[A-Za-z0-9_-]{1,64}`, safe as a NATS subject token.
    ///
    /// # Examples
    ///
    /// ```
    /// use capacity_auction::AgentId;
    ///
    /// assert_eq!(AgentId::new("agent-1")?.as_str(), "agent-1");
    /// assert!(AgentId::new("agent 1").is_err());
    /// # Ok::<(), capacity_auction::IdError>(())
    /// ```
    AgentId
}

token_id! {
    /// A bid's id, chosen by its agent and unique per agent: `[A-Za-z0-9_-]{1,64}`.
    BidId
}
