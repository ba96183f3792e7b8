//! Transports that serve a [`Market`](crate::Market); the market itself stays sans-IO.

#[cfg(feature = "nats")]
pub mod nats;
