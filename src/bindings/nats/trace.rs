//! W3C trace context over NATS headers (feature `otel`): extracted from requests, a server span
//! per request and per clearing cycle, injected into the events they cause; and the client-side
//! injection that keeps callers' traces whole.
//!
//! Uses the OpenTelemetry API only: the application installs a tracer provider and the
//! `TraceContextPropagator` (`opentelemetry::global::set_text_map_propagator`). Without the
//! feature every function here is a no-op.

use async_nats::HeaderMap;

/// A span the service opened for a request or a cycle; events it caused carry its context.
/// The span ends when the last holder drops it: after those events are published.
#[derive(Debug)]
pub(crate) struct ServerSpan {
    #[cfg(feature = "otel")]
    cx: opentelemetry::Context,
}

#[cfg(feature = "otel")]
mod otel {
    use async_nats::HeaderMap;
    use opentelemetry::propagation::{Extractor, Injector};

    /// Writes a propagator's fields into NATS headers.
    #[derive(Debug)]
    pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

    impl Injector for HeaderInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key, value.as_str());
        }
    }

    /// Reads a propagator's fields from NATS headers.
    #[derive(Debug)]
    pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

    impl Extractor for HeaderExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(|v| v.as_str())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_ref()).collect()
        }
    }
}

#[cfg(feature = "otel")]
pub use otel::{HeaderExtractor, HeaderInjector};

/// Injects the current OpenTelemetry context (`traceparent`, `tracestate`) into `headers`, for
/// callers that publish or request on their own; [`MarketClient`](super::MarketClient) does it
/// on every call. A no-op without the `otel` feature.
pub fn inject_current(headers: &mut HeaderMap) {
    #[cfg(feature = "otel")]
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&opentelemetry::Context::current(), &mut HeaderInjector(headers))
    });
    #[cfg(not(feature = "otel"))]
    let _ = headers;
}

impl ServerSpan {
    /// A server span named `name`, child of the context the request's headers carry.
    pub(crate) fn request(name: &'static str, subject: &str, headers: Option<&HeaderMap>) -> ServerSpan {
        #[cfg(feature = "otel")]
        {
            use opentelemetry::KeyValue;
            use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
            let parent = match headers {
                Some(h) => opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(h))),
                None => opentelemetry::Context::new(),
            };
            let tracer = opentelemetry::global::tracer("capacity-auction");
            let span = tracer
                .span_builder(name)
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("messaging.system", "nats"),
                    KeyValue::new("messaging.destination.name", subject.to_owned()),
                ])
                .start_with_context(&tracer, &parent);
            ServerSpan { cx: parent.with_span(span) }
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = (name, subject, headers);
            ServerSpan {}
        }
    }

    /// The span of clearing cycle `cycle`: a child of the operator's request that asked for it,
    /// or a root when the clearing loop runs it.
    pub(crate) fn cycle(cycle: u64, parent: Option<&ServerSpan>) -> ServerSpan {
        #[cfg(feature = "otel")]
        {
            use opentelemetry::KeyValue;
            use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
            let parent = parent.map_or_else(opentelemetry::Context::new, |p| p.cx.clone());
            let tracer = opentelemetry::global::tracer("capacity-auction");
            let span = tracer
                .span_builder("market.clear")
                .with_kind(if parent.has_active_span() { SpanKind::Internal } else { SpanKind::Server })
                .with_attributes([KeyValue::new("market.cycle", cycle as i64)])
                .start_with_context(&tracer, &parent);
            ServerSpan { cx: parent.with_span(span) }
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = (cycle, parent);
            ServerSpan {}
        }
    }

    /// Marks the span failed with `message`.
    pub(crate) fn fail(&self, message: &str) {
        #[cfg(feature = "otel")]
        {
            use opentelemetry::trace::{Status, TraceContextExt};
            self.cx.span().set_status(Status::error(message.to_owned()));
        }
        #[cfg(not(feature = "otel"))]
        let _ = message;
    }

    /// Writes the span's context into `headers`.
    pub(crate) fn inject(&self, headers: &mut HeaderMap) {
        #[cfg(feature = "otel")]
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&self.cx, &mut HeaderInjector(headers))
        });
        #[cfg(not(feature = "otel"))]
        let _ = headers;
    }
}

/// Which request an intake event answers: its agent and bid id as the event writes them, or the
/// credit or capacity operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    Bid(String, String),
    Operation(super::waiters::Key),
}

/// Cycles a request's span waits for its event before it is dropped (a repeat or a refusal the
/// ledger answered from memory emits none).
const ORIGIN_CYCLES: u64 = 2;

/// The spans events are published under: requests' by what they will emit, cycles' by number.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    by_origin:
        std::collections::HashMap<Origin, std::collections::VecDeque<(u64, std::sync::Arc<ServerSpan>)>>,
    by_cycle: std::collections::HashMap<u64, std::sync::Arc<ServerSpan>>,
    cycle: u64,
}

impl Spans {
    /// Whether spans are kept at all (the `otel` feature).
    pub(crate) const ON: bool = cfg!(feature = "otel");

    /// Events from `origin` go out under `span`.
    pub(crate) fn expect(&mut self, origin: Origin, span: &std::sync::Arc<ServerSpan>) {
        if Self::ON {
            self.by_origin.entry(origin).or_default().push_back((self.cycle, span.clone()));
        }
    }

    /// Events of cycle `cycle` go out under `span`.
    pub(crate) fn expect_cycle(&mut self, cycle: u64, span: std::sync::Arc<ServerSpan>) {
        if Self::ON {
            self.by_cycle.insert(cycle, span);
        }
    }

    /// Cycle `cycle` did not happen.
    pub(crate) fn drop_cycle(&mut self, cycle: u64) {
        self.by_cycle.remove(&cycle);
    }

    /// The span `event` goes out under, if a request or cycle is expecting it; an intake event
    /// takes its request's span out of the line.
    pub(crate) fn take(&mut self, event: &crate::Event) -> Option<std::sync::Arc<ServerSpan>> {
        use crate::EventKind;
        if !Self::ON {
            return None;
        }
        if let Some(cycle) = event.cycle {
            let span = self.by_cycle.get(&cycle).cloned();
            if let EventKind::CycleCleared { .. } = event.kind {
                self.by_cycle.remove(&cycle);
                self.cycle = self.cycle.max(cycle);
                let horizon = self.cycle.saturating_sub(ORIGIN_CYCLES);
                self.by_origin.retain(|_, line| {
                    line.retain(|(since, _)| *since >= horizon);
                    !line.is_empty()
                });
            }
            return span;
        }
        let origin = match &event.kind {
            EventKind::BidAccepted { agent, bid, .. } | EventKind::BidCancelled { agent, bid } => {
                Origin::Bid(agent.to_string(), bid.to_string())
            }
            EventKind::BidRejected { agent, bid, .. } => Origin::Bid(agent.clone(), bid.clone()),
            _ => Origin::Operation(super::waiters::Key::of(event)?),
        };
        let line = self.by_origin.get_mut(&origin)?;
        let span = line.pop_front().map(|(_, s)| s);
        if line.is_empty() {
            self.by_origin.remove(&origin);
        }
        span
    }
}
