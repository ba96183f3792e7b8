//! A trace started by a client continues through the service into the events: same trace id,
//! the service's span a child of the client's remote span, checked with the SDK's in-memory
//! exporter and the `traceparent` headers in `audit_log`.

#![cfg(feature = "otel")]

mod nats_harness;

use capacity_auction::bindings::nats::{MarketClient, MarketService, ServiceConfig};
use capacity_auction::{BidRequest, Event, EventKind, Slot};
use nats_harness::NatsServer;
use opentelemetry::context::FutureExt;
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

/// `(trace id, span id)` of a `traceparent` header.
fn traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_trace_continues_through_the_service_into_the_events() {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    global::set_tracer_provider(provider.clone());

    let server = NatsServer::start().await;
    let nats = server.connect().await;
    let config =
        ServiceConfig { namespace: Some("traced".into()), cadence: None, ..ServiceConfig::default() };
    let service = MarketService::start(nats.clone(), Default::default(), config).await.unwrap();
    let client = MarketClient::new(nats, Some("traced")).unwrap();

    let span = provider.tracer("agent").start("agent.work");
    let (trace_id, client_span) = (span.span_context().trace_id(), span.span_context().span_id());
    let cx = Context::current_with_span(span);
    let json = br#"{"id":"t1","bundle":{"cpu":"0.5"},"duration":2,"limit":"3"}"#;
    let bad = br#"{"id":"t2","bundle":{"gpu":"0.5"},"duration":2,"limit":"3"}"#;
    async {
        client.deposit("alice", "10".parse().unwrap()).await.unwrap();
        client.bid("alice", &BidRequest::from_json(json).unwrap()).await.unwrap();
        client.bid("alice", &BidRequest::from_json(bad).unwrap()).await.unwrap_err();
        client.clear(Some(Slot(0))).await.unwrap();
    }
    .with_context(cx.clone())
    .await;
    // A bid outside any trace starts none of the client's.
    let untraced = br#"{"id":"u1","bundle":{"cpu":"0.1"},"duration":2,"limit":"3"}"#;
    client.bid("alice", &BidRequest::from_json(untraced).unwrap()).await.unwrap();
    service.shutdown().await;
    drop(cx);

    let spans = exporter.get_finished_spans().unwrap();
    let server_span = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
    };
    let bid_span = server_span("market.bid");
    assert_eq!(bid_span.span_kind, SpanKind::Server);
    assert_eq!(bid_span.span_context.trace_id(), trace_id);
    assert_eq!(bid_span.parent_span_id, client_span);
    assert!(bid_span.parent_span_is_remote, "the parent came over the wire");
    let refused = spans
        .iter()
        .find(|s| s.name == "market.bid" && matches!(s.status, Status::Error { .. }))
        .expect("the refused bid's span is an error");
    assert_eq!(refused.span_context.trace_id(), trace_id);
    let clear_span = server_span("admin.market.clear");
    let cycle_span = server_span("market.clear");
    assert_eq!(cycle_span.parent_span_id, clear_span.span_context.span_id());
    assert_eq!(cycle_span.span_context.trace_id(), trace_id);

    let js = async_nats::jetstream::new(client.nats().clone());
    let mut stream = js.get_stream("traced_audit_log").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut traced = 0;
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        let event = Event::from_json(&message.payload).unwrap();
        let header = message.headers.get("traceparent").map(|v| v.as_str().to_owned());
        if event.bid() == Some("u1") {
            if let Some(h) = header {
                assert_ne!(traceparent(&h).0, trace_id.to_string(), "u1 was sent outside the trace");
            }
            continue;
        }
        let (trace, parent) = traceparent(&header.unwrap_or_else(|| panic!("no traceparent on {event:?}")));
        assert_eq!(trace, trace_id.to_string(), "{event:?}");
        let expected = match &event.kind {
            EventKind::CreditsDeposited { .. } => server_span("admin.market.deposit").span_context.span_id(),
            EventKind::BidAccepted { .. } => bid_span.span_context.span_id(),
            EventKind::BidRejected { .. } => refused.span_context.span_id(),
            _ if event.cycle.is_some() => cycle_span.span_context.span_id(),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(parent, expected.to_string(), "{event:?}");
        traced += 1;
    }
    assert!(traced >= 6, "deposit, accepted, rejected, won, prices, cycle: {traced}");
}
