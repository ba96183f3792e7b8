//! The per-event `audit_log`: every event on `system.market.<type>` / `system.economy.<type>`,
//! one message each, for consumers that read events one by one, except a cycle's consecutive
//! retained losses, which go as runs on `system.market.bids_retained`, one message each (the
//! journal's line for them: a standing book loses again every cycle, and one stored message per
//! retained loss would cost the server more than all the market's other events together).
//! [`Event::from_lines`] reads either kind of message. A message's id is `<market>:<seq>` of its
//! event, or `<market>:<first>-<last>` of a run's: a retry that groups a run otherwise (its
//! publish was handed more or fewer of the run) is then not taken for the first attempt by the
//! stream's duplicate check, which would accept it without the chain's check and store the
//! run's events twice.
//!
//! The log follows the journal, off the path of replies, and never skips: each message is
//! published with `Nats-Expected-Last-Sequence` set to the stream sequence of the one before it,
//! so the stream is gapless and in order whoever publishes, and a publish that keeps failing is
//! retried until it goes through while the service stops taking intake (see [`super::health`]).
//!
//! That chain is also what lets most publishes go out without asking for an acknowledgement: if
//! one is lost or refused, every later one is refused too (the one before it is missing), so the
//! acknowledged publish closing each run of [`ACK_EVERY`] says whether the whole run is stored.
//! It is why the stream keeps message ids for only a second ([`DEDUPE`]): the chain already
//! stores each event once, and at 100,000 events a second JetStream's default two minutes of ids
//! would hold twelve million of them in the server's memory.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use super::Subjects;
use super::kv::CORRELATION_ID;
use super::trace::{ServerSpan, Spans};
use crate::Event;
use crate::auction::lines;
use crate::auction::subscription::SharedEvent;

/// Publishes awaiting their acks at once: well under the client's limit on acks in flight
/// (5,000), past which a publish waits for an ack that nobody awaits.
const WINDOW: usize = 1024;

/// One publish in this many asks for an acknowledgement (and the last of a window); the others
/// go out bare, covered by the next acknowledged one through the chain of expected sequences.
const ACK_EVERY: usize = 64;

/// How long the stream remembers message ids.
const DEDUPE: Duration = Duration::from_secs(1);

/// The `audit_log` stream of one market.
#[derive(Debug, Clone)]
pub(crate) struct AuditLog {
    js: jetstream::Context,
    subjects: Subjects,
    market: String,
    replicas: usize,
    /// The stream sequence of the last message known stored: the next publish expects it.
    last: u64,
}

/// Why publishing stopped short.
#[derive(Debug)]
pub(crate) enum AuditError {
    /// The stream is gone.
    Missing,
    /// The stream holds other events than the ones before this one.
    OutOfStep { stored: u64 },
    /// JetStream did not acknowledge in time.
    Unavailable(String),
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditError::Missing => f.write_str("the stream is gone; creating it again and refilling it"),
            AuditError::OutOfStep { stored } => write!(f, "the stream holds events through {stored}"),
            AuditError::Unavailable(why) => f.write_str(why),
        }
    }
}

impl AuditLog {
    /// Binds the stream, creating it if needed.
    pub(crate) async fn open(
        js: jetstream::Context,
        subjects: Subjects,
        market: String,
        replicas: usize,
    ) -> Result<AuditLog, async_nats::Error> {
        let log = AuditLog { js, subjects, market, replicas, last: 0 };
        log.create().await?;
        Ok(log)
    }

    /// Creates the stream, or shortens an existing one's memory of message ids to [`DEDUPE`].
    async fn create(&self) -> Result<(), async_nats::Error> {
        let stream = self
            .js
            .get_or_create_stream(stream::Config {
                name: self.subjects.stream(),
                subjects: vec![self.subjects.events()],
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                duplicate_window: DEDUPE,
                ..Default::default()
            })
            .await?;
        let config = &stream.cached_info().config;
        if config.duplicate_window > DEDUPE {
            self.js.update_stream(stream::Config { duplicate_window: DEDUPE, ..config.clone() }).await?;
        }
        Ok(())
    }

    /// The last event stored (0 for none), from the stream's last message.
    pub(crate) async fn stored(&self) -> Result<u64, AuditError> {
        Ok(self.position().await?.1)
    }

    /// Learns where the stream stands, to publish from there: returns the last event it holds.
    pub(crate) async fn sync(&mut self) -> Result<u64, AuditError> {
        let (last, stored) = self.position().await?;
        self.last = last;
        Ok(stored)
    }

    /// The stream's last sequence and the last event its message holds.
    async fn position(&self) -> Result<(u64, u64), AuditError> {
        let stream = self.js.get_stream(self.subjects.stream()).await.map_err(|e| match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                AuditError::Missing
            }
            _ => AuditError::Unavailable(e.to_string()),
        })?;
        let state = &stream.cached_info().state;
        if state.messages == 0 {
            return Ok((state.last_sequence, 0));
        }
        let unavailable = |why: String| AuditError::Unavailable(why);
        let message =
            stream.get_raw_message(state.last_sequence).await.map_err(|e| unavailable(e.to_string()))?;
        let events = Event::from_lines(&message.payload).map_err(|e| unavailable(e.message))?;
        let stored = events.last().ok_or_else(|| unavailable("an empty audit message".into()))?.seq;
        Ok((state.last_sequence, stored))
    }

    /// Creates the stream again after it was deleted (it is then refilled from the journal).
    pub(crate) async fn recreate(&mut self) -> Result<(), AuditError> {
        self.create().await.map_err(|e| AuditError::Unavailable(e.to_string()))?;
        self.last = 0;
        Ok(())
    }

    /// Publishes `events` with their JSON (consecutive, the first right after what the stream
    /// holds), pipelined in windows; returns how many were stored before the first that was not.
    pub(crate) async fn publish(
        &mut self,
        events: &[(SharedEvent, Bytes)],
        spans: &std::sync::Mutex<Spans>,
    ) -> Result<usize, (usize, AuditError)> {
        let spans: Vec<Option<Arc<ServerSpan>>> = {
            let mut spans = spans.lock().unwrap_or_else(|e| e.into_inner());
            events.iter().map(|(e, _)| spans.take(e)).collect()
        };
        // Each message's events (one, or a run of retained losses), with its payload when the
        // journal's writer made it already.
        let mut messages: Vec<(Range<usize>, Option<Bytes>)> = Vec::new();
        let mut at = 0;
        while at < events.len() {
            let (run, made) = match journal_run(&events[at..]) {
                Some(run) => (run, Some(events[at].1.clone())),
                None => match lines::run_length(events[at..].iter().map(|(e, _)| &**e)) {
                    1 => (1, Some(events[at].1.clone()).filter(|json| !json.is_empty())),
                    run => (run, None),
                },
            };
            messages.push((at..at + run, made));
            at += run;
        }
        let mut done = 0;
        for window in messages.chunks(WINDOW) {
            // (events stored once this one is, its stream sequence, its acknowledgement)
            let mut acks = Vec::with_capacity(window.len() / ACK_EVERY + 1);
            for (i, (message, made)) in window.iter().enumerate() {
                let closes_run = (i + 1) % ACK_EVERY == 0 || i + 1 == window.len();
                let sequence = self.last + 1 + i as u64;
                let span = spans[message.clone()].iter().find_map(Option::as_deref);
                let held = &events[message.clone()];
                match self.send(held, made.clone(), sequence, span, closes_run).await {
                    Ok(Some(ack)) => acks.push((message.end, sequence, ack)),
                    Ok(None) => {}
                    Err(e) => return Err((done, e)),
                }
            }
            for (through, sequence, ack) in acks {
                match tokio::time::timeout(Duration::from_secs(5), ack).await {
                    Ok(Ok(_)) => (done, self.last) = (through, sequence),
                    Ok(Err(e)) => {
                        let why = match e.kind() {
                            PublishErrorKind::StreamNotFound => AuditError::Missing,
                            PublishErrorKind::WrongLastSequence => match self.sync().await {
                                Ok(stored) => AuditError::OutOfStep { stored },
                                Err(e) => e,
                            },
                            _ => AuditError::Unavailable(e.to_string()),
                        };
                        return Err((done, why));
                    }
                    Err(_) => {
                        return Err((done, AuditError::Unavailable("no acknowledgement in time".into())));
                    }
                }
            }
        }
        Ok(done)
    }

    /// Publishes one message, the `sequence`th of the stream, holding `events` (one, or a run of
    /// retained losses) as `made` when it was made already; asks for an acknowledgement when
    /// `acknowledged`.
    async fn send(
        &self,
        events: &[(SharedEvent, Bytes)],
        made: Option<Bytes>,
        sequence: u64,
        span: Option<&ServerSpan>,
        acknowledged: bool,
    ) -> Result<Option<jetstream::context::PublishAckFuture>, AuditError> {
        let event = &events[0].0;
        let mut headers = HeaderMap::new();
        let id = match events {
            [_] => format!("{}:{}", self.market, event.seq),
            [.., last] => format!("{}:{}-{}", self.market, event.seq, last.0.seq),
            [] => unreachable!("a message holds at least one event"),
        };
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SEQUENCE, (sequence - 1).to_string().as_str());
        if let Some(cid) = &event.correlation_id {
            headers.insert(CORRELATION_ID, &**cid);
        }
        if let Some(span) = span {
            span.inject(&mut headers);
        }
        // An event read back from the journal, or one a run of retained losses stands for there,
        // has no JSON of its own yet; a run without the journal's line for it is written here.
        let (subject, json) = match events {
            [_] => (self.subjects.event(&event.kind), made.unwrap_or_else(|| event.to_json().into())),
            run => (
                self.subjects.retained_losses(),
                made.unwrap_or_else(|| lines::run_json(run.iter().map(|(e, _)| &**e)).into()),
            ),
        };
        let sent = if acknowledged {
            self.js.publish_with_headers(subject, headers, json).await.map(Some).map_err(|e| e.to_string())
        } else {
            self.js
                .client()
                .publish_with_headers(subject, headers, json)
                .await
                .map(|()| None)
                .map_err(|e| e.to_string())
        };
        sent.map_err(AuditError::Unavailable)
    }
}

/// How many events the journal's line for a run of retained losses, given with the first of
/// `events`, stands for, when all of them are here: the writer hands over a run's line with its
/// first loss and nothing with the others, so the audit log sends that line as it is instead of
/// writing the run again on the thread that answers requests.
fn journal_run(events: &[(SharedEvent, Bytes)]) -> Option<usize> {
    let size = lines::run_size(&events.first()?.1)?;
    let members = events[1..]
        .iter()
        .take(size)
        .take_while(|(e, json)| {
            json.is_empty() && matches!(e.kind, crate::EventKind::BidLost { retained: true, .. })
        })
        .count();
    (members + 1 == size).then_some(size)
}
