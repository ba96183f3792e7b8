//! The market served over NATS (docs/design.md §10): request-reply subjects per agent, every
//! event on the `audit_log` JetStream stream, prices and balances in KV.
//!
//! [`MarketService`] runs a [`Market`](crate::Market) behind the subjects; [`MarketClient`] is
//! the typed client agents, operators and tests use. The core stays sans-IO: the service only
//! calls the market's public API and publishes what it emits.

mod audit;
mod client;
mod follow;
mod handlers;
mod health;
mod journal;
mod kv;
mod leader;
mod lease;
mod scenario;
mod service;
mod snapshots;
mod subjects;
mod trace;
mod waiters;
mod wire;

pub use client::{ClientError, MarketClient};
pub use follow::{ReadBack, read_back};
pub use handlers::{MAX_BATCH, MAX_CORRELATION_ID, MAX_HEADER};
pub use health::{AUDIT_GRACE, JOURNAL_GRACE, MAX_AUDIT_LAG, Role, ServiceStatus};
pub use journal::{INSTANCE, KIND, SEQS};
pub use kv::CORRELATION_ID;
pub use scenario::run_scenario;
pub use service::{MarketService, ServiceConfig, ServiceError};
pub use subjects::Subjects;
pub use trace::inject_current;
#[cfg(feature = "otel")]
pub use trace::{HeaderExtractor, HeaderInjector};
pub use wire::{
    Ack, BalanceReply, CancelRequest, CapacityRequest, ClearRequest, DepositRequest, Reply, TransferRequest,
    WireError,
};
