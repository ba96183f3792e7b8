//! [`MarketClient`]: the market's subjects as typed async calls, with timeouts.

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::{Client, HeaderMap, Request};
use bytes::Bytes;
use serde::Serialize;

use super::Subjects;
use super::health::ServiceStatus;
use super::kv::CORRELATION_ID;
use super::wire::{self, Ack, BalanceReply, Reply};
use crate::{BidRequest, Capacity, Credits, Event, RejectCode, Rejection, Slot};

/// Why a call did not get an answer from the market.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The market answered and refused (docs/design.md §8).
    #[error("refused: {0}")]
    Refused(Rejection),
    /// Nobody answered within the timeout: the service is slow, or the request's event was not
    /// acknowledged in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No service listens on the subject.
    #[error("no market serves `{0}`")]
    NoResponders(String),
    /// The connection failed.
    #[error("nats: {0}")]
    Transport(String),
    /// The answer was not what the subject answers.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
}

impl ClientError {
    /// The reason code when the market refused.
    pub fn code(&self) -> Option<RejectCode> {
        match self {
            ClientError::Refused(r) => Some(r.code),
            _ => None,
        }
    }
}

/// Calls a market's subjects (docs/design.md §10).
///
/// Requests carry the client's `correlation-id` header, if set, which the market copies onto
/// every event the request causes, and (feature `otel`) the current trace context, so the
/// service's spans and the events continue the caller's trace.
#[derive(Clone, Debug)]
pub struct MarketClient {
    client: Client,
    subjects: Subjects,
    timeout: Duration,
    correlation_id: Option<String>,
}

impl MarketClient {
    /// A client of the market under `namespace` (none: the plain subjects), with a 5 s timeout.
    ///
    /// # Errors
    ///
    /// When the namespace is not 1 to 64 of `[A-Za-z0-9_-]`.
    pub fn new(client: Client, namespace: Option<&str>) -> Result<MarketClient, crate::IdError> {
        Ok(MarketClient {
            client,
            subjects: Subjects::new(namespace)?,
            timeout: Duration::from_secs(5),
            correlation_id: None,
        })
    }

    /// The same client with another timeout per call.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> MarketClient {
        self.timeout = timeout;
        self
    }

    /// The same client, tagging its requests (and so their events) with `correlation_id`.
    #[must_use]
    pub fn correlation_id(mut self, correlation_id: impl Into<String>) -> MarketClient {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// The subjects it calls.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The underlying connection.
    pub fn nats(&self) -> &Client {
        &self.client
    }

    /// Sends `payload` to `subject` and returns the answer's payload.
    ///
    /// # Errors
    ///
    /// [`ClientError::Timeout`], [`ClientError::NoResponders`] or [`ClientError::Transport`].
    pub async fn request(&self, subject: String, payload: Bytes) -> Result<Bytes, ClientError> {
        let mut request = Request::new().payload(payload).timeout(Some(self.timeout));
        let mut headers = HeaderMap::new();
        if let Some(cid) = &self.correlation_id {
            headers.insert(CORRELATION_ID, cid.as_str());
        }
        super::inject_current(&mut headers);
        if !headers.is_empty() {
            request = request.headers(headers);
        }
        match self.client.send_request(subject.clone(), request).await {
            Ok(message) => Ok(message.payload),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::TimedOut => ClientError::Timeout(self.timeout),
                RequestErrorKind::NoResponders => ClientError::NoResponders(subject),
                _ => ClientError::Transport(e.to_string()),
            }),
        }
    }

    async fn call(&self, subject: String, body: &impl Serialize) -> Result<Ack, ClientError> {
        let payload = serde_json::to_vec(body).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        let answer = self.request(subject, payload.into()).await?;
        let reply: Reply = decode(&answer)?;
        reply.into_result().map_err(ClientError::Refused)
    }

    /// Submits a bid as `agent`; the answer carries the `seq` of its `bid_accepted`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with the bid's reason code, or no answer.
    pub async fn bid(&self, agent: &str, bid: &BidRequest) -> Result<Ack, ClientError> {
        self.call(self.subjects.bid(agent), bid).await
    }

    /// Submits a batch as `agent`, one answer per bid in order.
    ///
    /// # Errors
    ///
    /// When the batch as a whole got no answer or was refused.
    pub async fn bids(
        &self,
        agent: &str,
        bids: &[BidRequest],
    ) -> Result<Vec<Result<Ack, Rejection>>, ClientError> {
        let payload = serde_json::to_vec(bids).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        let answer = self.request(self.subjects.bids(agent), payload.into()).await?;
        match serde_json::from_slice::<Vec<Reply>>(&answer) {
            Ok(replies) => Ok(replies.into_iter().map(Reply::into_result).collect()),
            Err(_) => Err(match decode::<Reply>(&answer)?.into_result() {
                Err(r) => ClientError::Refused(r),
                Ok(_) => ClientError::BadAnswer("a batch is answered with an array".into()),
            }),
        }
    }

    /// Withdraws `agent`'s pending bid.
    ///
    /// # Errors
    ///
    /// `not_found`, `not_pending`, or no answer.
    pub async fn cancel(&self, agent: &str, bid: &str) -> Result<Ack, ClientError> {
        self.call(self.subjects.cancel(agent), &wire::CancelRequest { bid: bid.to_owned() }).await
    }

    /// The latest `price_discovered` of `resource`.
    ///
    /// # Errors
    ///
    /// `unknown_resource`, `not_found` before the first cycle, or no answer.
    pub async fn state(&self, resource: &str) -> Result<Event, ClientError> {
        let answer = self.request(self.subjects.state(resource), Bytes::new()).await?;
        match Event::from_json(&answer) {
            Ok(event) => Ok(event),
            Err(_) => Err(refusal(&answer)),
        }
    }

    /// `agent`'s credits.
    ///
    /// # Errors
    ///
    /// `unknown_agent`, or no answer.
    pub async fn balance(&self, agent: &str) -> Result<BalanceReply, ClientError> {
        let answer = self.request(self.subjects.balance(agent), Bytes::new()).await?;
        serde_json::from_slice(&answer).map_err(|_| refusal(&answer))
    }

    /// Moves `amount` from `agent` to `to`.
    ///
    /// # Errors
    ///
    /// `invalid_amount`, `unknown_agent`, `insufficient_credits`, or no answer.
    pub async fn transfer(&self, agent: &str, to: &str, amount: Credits) -> Result<Ack, ClientError> {
        let request = wire::TransferRequest { to: to.to_owned(), amount: amount.to_decimal() };
        self.call(self.subjects.transfer(agent), &request).await
    }

    /// Operator: credits into `agent`'s account.
    ///
    /// # Errors
    ///
    /// `invalid_amount`, or no answer.
    pub async fn deposit(&self, agent: &str, amount: Credits) -> Result<Ack, ClientError> {
        let request = wire::DepositRequest { agent: agent.to_owned(), amount: amount.to_decimal() };
        self.call(self.subjects.deposit(), &request).await
    }

    /// Operator: sets `resource`'s capacity over `[from, to)`.
    ///
    /// # Errors
    ///
    /// `unknown_resource`, `invalid_window`, or no answer.
    pub async fn set_capacity(
        &self,
        resource: &str,
        from: Slot,
        to: Slot,
        capacity: Capacity,
    ) -> Result<Ack, ClientError> {
        let request = wire::CapacityRequest {
            resource: resource.to_owned(),
            from_slot: from.get(),
            to_slot: to.get(),
            capacity: capacity.to_decimal(),
        };
        self.call(self.subjects.capacity(), &request).await
    }

    /// Operator: clears at slot `at` (the service's clock when `None`); the answer carries the
    /// `seq` of `cycle_cleared`.
    ///
    /// # Errors
    ///
    /// `invalid_window` for a slot in the past, or no answer.
    pub async fn clear(&self, at: Option<Slot>) -> Result<Ack, ClientError> {
        self.call(self.subjects.clear(), &wire::ClearRequest { at: at.map(Slot::get) }).await
    }

    /// The leader's role, positions and health (`admin.market.status`).
    ///
    /// # Errors
    ///
    /// No answer, or not a status.
    pub async fn status(&self) -> Result<ServiceStatus, ClientError> {
        let answer = self.request(self.subjects.status(), Bytes::new()).await?;
        serde_json::from_slice(&answer).map_err(|_| refusal(&answer))
    }
}

fn decode<T: serde::de::DeserializeOwned>(answer: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(answer)
        .map_err(|e| ClientError::BadAnswer(format!("{e}: {}", String::from_utf8_lossy(answer))))
}

/// An answer that is not the subject's payload: a refusal, or something unexpected.
fn refusal(answer: &[u8]) -> ClientError {
    match decode::<Reply>(answer).map(Reply::into_result) {
        Ok(Err(r)) => ClientError::Refused(r),
        Ok(Ok(_)) => ClientError::BadAnswer(String::from_utf8_lossy(answer).into_owned()),
        Err(e) => e,
    }
}
