//! The journal: one JetStream stream per market holding everything the market did, in `seq`
//! order, many events per message. A reply's `seq` is durable once the message holding it is
//! acknowledged here; recovery and standbys read the market back from it.
//!
//! Messages, told apart by the [`KIND`] header:
//! - `genesis`, the first: the market's configuration, which every later message assumes;
//! - `events`: a run of events, one JSON line each, [`SEQS`] naming the first and last `seq`;
//! - `leader`: an instance took over; it carries no events.
//!
//! Only the leader appends, and it fences every append with `Nats-Expected-Last-Sequence`: the
//! stream takes a message only right after the one its writer last saw. A deposed leader's
//! append fails (its writer stops), and a new leader's claim fails until it has read everything
//! before it. Message ids (`Nats-Msg-Id`) name the writing instance, so a retried append is
//! stored once and no id is ever reused by another process.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use super::Subjects;
use crate::auction::lines::Lines;
use crate::auction::subscription::Batch;
use crate::{Event, MarketConfig};

/// The header telling a journal message's kind: `genesis`, `events` or `leader`.
pub const KIND: &str = "Capacity-Auction-Kind";
/// The header of an `events` message: its first and last `seq`, space-separated.
pub const SEQS: &str = "Capacity-Auction-Seq";
/// The header naming the instance that wrote a message.
pub const INSTANCE: &str = "Capacity-Auction-Instance";

/// Largest journal message body, in bytes: well under the server's default `max_payload` (1 MiB).
pub(crate) const MAX_MESSAGE: usize = 512 * 1024;

/// How long an append waits for its acknowledgement before it is retried.
const ACK_WAIT: Duration = Duration::from_secs(2);

/// A journal message, read back.
#[derive(Debug)]
pub(crate) enum Entry {
    /// The market's configuration.
    Genesis(Box<MarketConfig>),
    /// A run of events.
    Events(Vec<Event>),
    /// An instance took over.
    Leader(String),
}

/// Why an append did not go through.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// Another instance appended first: this one no longer leads.
    Fenced,
    /// JetStream did not acknowledge it (the server or stream is away): retry later.
    Unavailable(String),
}

/// An acknowledgement awaited, and until when.
struct Ack {
    until: tokio::time::Instant,
    ack: Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>,
}

/// A journal message sent (or to be sent again) and not yet known to be stored.
pub(crate) struct Pending {
    id: String,
    /// Its first and last event `seq`.
    seqs: (u64, u64),
    body: Bytes,
    /// The stream sequence it was fenced to follow.
    expected: u64,
    ack: Option<Ack>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("id", &self.id).field("sent", &self.ack.is_some()).finish()
    }
}

impl Pending {
    /// The last event `seq` it holds.
    pub(crate) fn last_seq(&self) -> u64 {
        self.seqs.1
    }

    /// What [`Journal::confirm`] needs of it.
    pub(crate) fn sent(&self) -> Sent {
        Sent { id: self.id.clone(), expected: self.expected, last: self.seqs.1 }
    }
}

/// A pending message as [`Journal::confirm`] reads it.
#[derive(Debug)]
pub(crate) struct Sent {
    id: String,
    expected: u64,
    last: u64,
}

/// What came back for a pending message.
#[derive(Debug)]
pub(crate) enum AckOutcome {
    Stored(PublishAck),
    Failed(PublishError),
    /// Nothing within [`ACK_WAIT`].
    Late,
    /// It was never sent.
    Unsent,
}

/// Waits for what comes back for the oldest of `pending`; never returns while it is empty.
pub(crate) async fn next_ack(pending: &mut VecDeque<Pending>) -> AckOutcome {
    let Some(front) = pending.front_mut() else { return std::future::pending().await };
    let Some(ack) = front.ack.as_mut() else { return AckOutcome::Unsent };
    outcome(ack.until, ack.ack.as_mut()).await
}

/// What comes back for a message by `until`.
async fn outcome(
    until: tokio::time::Instant,
    ack: impl Future<Output = Result<PublishAck, PublishError>>,
) -> AckOutcome {
    match tokio::time::timeout_at(until, ack).await {
        Ok(Ok(stored)) => AckOutcome::Stored(stored),
        Ok(Err(e)) => AckOutcome::Failed(e),
        Err(_) => AckOutcome::Late,
    }
}

/// The market's journal, as its writer (or a reader) sees it.
#[derive(Debug)]
pub(crate) struct Journal {
    js: jetstream::Context,
    stream: String,
    subject: String,
    market: String,
    instance: String,
    /// The stream sequence of the last message this instance knows is in the journal.
    last: u64,
    /// Recent `events` messages appended: `(last event seq, stream sequence)`, oldest first.
    positions: VecDeque<(u64, u64)>,
}

impl Journal {
    /// Binds the market's journal stream, creating it (empty) if needed.
    pub(crate) async fn open(
        js: jetstream::Context,
        subjects: &Subjects,
        market: &str,
        instance: &str,
        replicas: usize,
    ) -> Result<Journal, async_nats::Error> {
        js.get_or_create_stream(stream::Config {
            name: subjects.journal(),
            subjects: vec![subjects.journal_subject()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            // Keep ids long enough to catch any retry, across a failover too.
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
        Ok(Journal {
            js,
            stream: subjects.journal(),
            subject: subjects.journal_subject(),
            market: market.to_owned(),
            instance: instance.to_owned(),
            last: 0,
            positions: VecDeque::new(),
        })
    }

    /// The stream sequence of the last message this instance knows of.
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    /// Records that the journal holds everything through stream sequence `last` (read back).
    pub(crate) fn read_through(&mut self, last: u64) {
        self.last = self.last.max(last);
    }

    /// The stream's last sequence now, as the server tells it.
    pub(crate) async fn tail(&self) -> Result<u64, async_nats::Error> {
        let stream = self.js.get_stream_no_info(&self.stream).await?;
        Ok(stream.get_info().await?.state.last_sequence)
    }

    /// The stream sequence of the message holding event `seq`, if this instance appended it
    /// recently.
    pub(crate) fn position_of(&self, seq: u64) -> Option<u64> {
        self.positions.iter().find(|(last, _)| *last >= seq).map(|&(_, at)| at)
    }

    /// Appends the genesis message: the journal's first, naming the market's configuration.
    pub(crate) async fn genesis(&mut self, config: &MarketConfig) -> Result<(), AppendError> {
        let body = serde_json::to_vec(config).expect("configurations always serialize");
        let id = format!("{}:genesis", self.market);
        self.append("genesis", HeaderMap::new(), Bytes::from(body), id).await.map(|_| ())
    }

    /// Appends a `leader` message: this instance leads from here on. Fails with
    /// [`AppendError::Fenced`] when the journal holds messages this instance has not read.
    pub(crate) async fn claim(&mut self) -> Result<(), AppendError> {
        let id = format!("{}:{}:leader:{}", self.market, self.instance, self.last);
        let body = Bytes::from(self.instance.clone());
        self.append("leader", HeaderMap::new(), body, id).await.map(|_| ())
    }

    /// Sends `events` (consecutive, in order, after every event already sent) in as few
    /// messages as [`MAX_MESSAGE`] allows, each fenced on the one before it, and queues them on
    /// `pending` (everything sent and not yet [confirmed](Journal::confirm), oldest first)
    /// without waiting for their acknowledgements. A message that cannot be sent now is queued
    /// unsent, and so is every later one: [`recover`](Journal::recover) sends them again.
    ///
    /// Each event's JSON is a line, made ahead where `lines` has it; with `json`, returns each
    /// event's JSON, a slice of the message holding it (empty for an event a run stands for).
    pub(crate) async fn send_events(
        &mut self,
        events: &Batch,
        lines: &mut Lines,
        pending: &mut VecDeque<Pending>,
        json: bool,
    ) -> Vec<Bytes> {
        let mut out = Vec::new();
        let (mut body, mut spans) = (Vec::new(), Vec::new());
        let slices = |run: &Bytes, spans: &mut Vec<Option<std::ops::Range<usize>>>| {
            spans
                .drain(..)
                .map(|span| span.map_or_else(Bytes::new, |span| run.slice(span)))
                .collect::<Vec<_>>()
        };
        // The first and last `seq` of the message being made.
        let Some(mut first) = events.iter().next().map(|e| e.seq) else { return out };
        let mut last = first;
        for event in events.iter() {
            let from = body.len();
            // An event a run stands for goes with the run, in its message.
            if !lines.write(event, &mut body) {
                if json {
                    spans.push(None);
                }
                last = event.seq;
                continue;
            }
            let len = body.len() - from;
            if from > 0 && body.len() + 1 > MAX_MESSAGE {
                let line = body.split_off(from);
                let run = Bytes::from(std::mem::replace(&mut body, line));
                if json {
                    out.extend(slices(&run, &mut spans));
                }
                self.queue(first, last, run, pending).await;
                first = event.seq;
            }
            if json {
                spans.push(Some(body.len() - len..body.len()));
            }
            body.push(b'\n');
            last = event.seq;
        }
        if !body.is_empty() {
            let run = Bytes::from(body);
            if json {
                out.extend(slices(&run, &mut spans));
            }
            self.queue(first, last, run, pending).await;
        }
        out
    }

    async fn queue(&mut self, first: u64, last: u64, body: Bytes, pending: &mut VecDeque<Pending>) {
        let id = format!("{}:{}:{first}", self.market, self.instance);
        let mut message = Pending { id, seqs: (first, last), body, expected: 0, ack: None };
        if pending.iter().all(|p| p.ack.is_some()) {
            let expected = self.last + pending.len() as u64;
            let sending = self.send_pending(message.id.clone(), message.seqs, message.body.clone(), expected);
            if let Ok(ack) = sending.await {
                message.expected = expected;
                message.ack = Some(ack);
            }
        }
        pending.push_back(message);
    }

    async fn send_pending(
        &self,
        id: String,
        (first, last): (u64, u64),
        body: Bytes,
        expected: u64,
    ) -> Result<Ack, AppendError> {
        let mut headers = HeaderMap::new();
        headers.insert(SEQS, format!("{first} {last}").as_str());
        let ack = self.send("events", headers, body, &id, expected).await?;
        Ok(Ack { until: tokio::time::Instant::now() + ACK_WAIT, ack: ack.into_future() })
    }

    /// Settles the oldest pending message with what came back for it: its stream sequence once
    /// stored (the caller then drops it from the queue).
    pub(crate) async fn confirm(&mut self, message: Sent, outcome: AckOutcome) -> Result<u64, AppendError> {
        let at = self.stored_at(&message.id, message.expected, outcome).await?;
        self.stored(message.last, at);
        Ok(at)
    }

    /// Where the message `id`, fenced to follow stream sequence `expected`, was stored, from what
    /// came back for it. Every message sent before it was stored, so a refused fence means
    /// another writer, unless the stored message is this very one (an earlier attempt whose
    /// acknowledgement was lost).
    async fn stored_at(&self, id: &str, expected: u64, outcome: AckOutcome) -> Result<u64, AppendError> {
        match outcome {
            AckOutcome::Stored(ack) => Ok(ack.sequence),
            AckOutcome::Failed(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                match self.message_id(expected + 1).await {
                    Ok(Some(stored)) if stored == id => Ok(expected + 1),
                    Ok(_) => Err(AppendError::Fenced),
                    Err(e) => Err(AppendError::Unavailable(e)),
                }
            }
            AckOutcome::Failed(e) => Err(AppendError::Unavailable(e.to_string())),
            AckOutcome::Late => Err(AppendError::Unavailable("no acknowledgement in time".into())),
            AckOutcome::Unsent => Err(AppendError::Unavailable("a journal message could not be sent".into())),
        }
    }

    fn stored(&mut self, last_seq: u64, at: u64) {
        self.last = at;
        self.positions.push_back((last_seq, at));
        if self.positions.len() > 4096 {
            self.positions.pop_front();
        }
    }

    /// After a pending message failed: sends every one of `pending` again, each fenced on the
    /// one before, under its own id. One the stream already holds (its acknowledgement was lost)
    /// comes back as a duplicate, or fenced out by itself: [`confirm`](Journal::confirm) takes
    /// either as stored.
    pub(crate) async fn recover(&mut self, pending: &mut VecDeque<Pending>) -> Result<(), AppendError> {
        pending.iter_mut().for_each(|p| p.ack = None);
        for (k, p) in pending.iter_mut().enumerate() {
            let expected = self.last + k as u64;
            let ack = self.send_pending(p.id.clone(), p.seqs, p.body.clone(), expected).await?;
            p.expected = expected;
            p.ack = Some(ack);
        }
        Ok(())
    }

    /// Appends one message right after stream sequence `self.last`; returns its sequence.
    async fn append(
        &mut self,
        kind: &str,
        headers: HeaderMap,
        body: Bytes,
        id: String,
    ) -> Result<u64, AppendError> {
        let expected = self.last;
        let ack = self.send(kind, headers, body, &id, expected).await?;
        let outcome = outcome(tokio::time::Instant::now() + ACK_WAIT, ack.into_future()).await;
        self.last = self.stored_at(&id, expected, outcome).await?;
        Ok(self.last)
    }

    /// Sends one message fenced to follow stream sequence `expected`.
    async fn send(
        &self,
        kind: &str,
        mut headers: HeaderMap,
        body: Bytes,
        id: &str,
        expected: u64,
    ) -> Result<jetstream::context::PublishAckFuture, AppendError> {
        headers.insert(KIND, kind);
        headers.insert(INSTANCE, self.instance.as_str());
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SEQUENCE, expected.to_string().as_str());
        self.js
            .publish_with_headers(self.subject.clone(), headers, body)
            .await
            .map_err(|e| AppendError::Unavailable(e.to_string()))
    }

    /// The id of the message at stream sequence `sequence`; `None` when there is none.
    async fn message_id(&self, sequence: u64) -> Result<Option<String>, String> {
        let stream = self.js.get_stream_no_info(&self.stream).await.map_err(|e| e.to_string())?;
        match stream.get_raw_message(sequence).await {
            Ok(message) => {
                Ok(message.headers.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str().to_owned()))
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The stream sequence of the journal message holding event `seq` (or, when none does, of
    /// the first message after it): a binary search over the messages' [`SEQS`] headers.
    pub(crate) async fn find(&self, seq: u64) -> Result<u64, async_nats::Error> {
        let stream = self.js.get_stream_no_info(&self.stream).await?;
        let (mut lo, mut hi) = (1, self.tail().await?.max(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if last_event_through(&stream, mid).await? >= seq {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    /// Reads the journal from stream sequence `from` on, in order, as it grows.
    pub(crate) async fn reader(&self, from: u64) -> Result<Reader, async_nats::Error> {
        let stream = self.js.get_stream_no_info(&self.stream).await?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from.max(1) },
                ..Default::default()
            })
            .await?;
        Ok(Reader { messages: consumer.messages().await? })
    }
}

/// The last event held by the journal's messages up to stream sequence `at` (0 when none).
async fn last_event_through(
    stream: &jetstream::stream::Stream<()>,
    mut at: u64,
) -> Result<u64, async_nats::Error> {
    while at > 0 {
        let message = stream.get_raw_message(at).await?;
        if let Some(seqs) = message.headers.get(SEQS) {
            let last = seqs.as_str().split(' ').nth(1).and_then(|s| s.parse().ok());
            return last.ok_or_else(|| format!("journal message {at}: a bad {SEQS} header").into());
        }
        at -= 1;
    }
    Ok(0)
}

/// The journal's messages in order, from a starting sequence, waiting for new ones at the end.
pub(crate) struct Reader {
    messages: async_nats::jetstream::consumer::pull::Ordered,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reader")
    }
}

impl Reader {
    /// The next message and its stream sequence; waits for one.
    pub(crate) async fn next(&mut self) -> Result<(u64, Entry), String> {
        let message = match self.messages.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(format!("reading the journal: {e}")),
            None => return Err("the journal reader ended".into()),
        };
        let sequence = message.info().map_err(|e| e.to_string())?.stream_sequence;
        let entry = decode(message.headers.as_ref(), &message.payload)
            .map_err(|e| format!("journal message {sequence}: {e}"))?;
        Ok((sequence, entry))
    }
}

/// A journal message from its headers and body.
pub(crate) fn decode(headers: Option<&HeaderMap>, body: &[u8]) -> Result<Entry, String> {
    let kind = headers.and_then(|h| h.get(KIND)).map(|v| v.as_str()).unwrap_or("");
    match kind {
        "genesis" => {
            serde_json::from_slice(body).map(|c| Entry::Genesis(Box::new(c))).map_err(|e| e.to_string())
        }
        "leader" => Ok(Entry::Leader(String::from_utf8_lossy(body).into_owned())),
        "events" => Event::from_lines(body).map(Entry::Events).map_err(|e| e.to_string()),
        other => Err(format!("a message of unknown kind `{other}`")),
    }
}
