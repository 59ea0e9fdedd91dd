//! With the `opentelemetry` feature, the proxy's span for a request is a child of the
//! client's trace context and the parent of the target's: the target's `traceparent` carries
//! the client's trace id and the proxy span's id, as exported by the SDK's in-memory
//! exporter. Run with `cargo test --features opentelemetry --test opentelemetry`.

#![cfg(feature = "opentelemetry")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{echo_target, ed25519_keys, get_with, inner_echo, serve, user_header};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{InMemorySpanExporter, SdkTracerProvider, SpanData},
};
use tower_identity_proxy::{ProxyHandle, ProxyLayer, Target, jwt::KeySigner};
use tracing_subscriber::layer::SubscriberExt as _;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// Serves the echo inner service behind a proxy to `target` (the `x-test-user` identity,
/// an Ed25519 signer: everything on the calling thread).
async fn app(target: &str) -> common::Server {
    let layer = ProxyLayer::new(KeySigner::new(ed25519_keys()))
        .with_identity(user_header)
        .handle(ProxyHandle::with_target(Target::parse(target).unwrap()));
    serve(inner_echo().layer(layer)).await
}

/// The finished span named `proxy`, once exported (bounded wait: the span ends when the
/// proxy's future is dropped, just after the client has its response).
async fn proxy_span(exporter: &InMemorySpanExporter) -> SpanData {
    for _ in 0..200 {
        let spans = exporter.get_finished_spans().unwrap();
        if let Some(span) = spans.into_iter().find(|s| s.name == "proxy") {
            return span;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the proxy's span was not exported");
}

/// The subscriber's dispatcher is this thread's: a current-thread runtime polls every task
/// (the app, the target, the client) on it.
#[tokio::test(flavor = "current_thread")]
async fn the_proxy_span_is_the_parent_of_the_targets() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let target = echo_target().await;
    let server = app(&target.url()).await;
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let res = get_with(
        &server.url("/proxy/x"),
        &[
            ("x-test-user", "alice:ROLE_USER"),
            ("traceparent", &traceparent),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    assert_eq!(res.status, 200);

    let received = target.last().header("traceparent").unwrap();
    let parts: Vec<&str> = received.split('-').collect();
    assert_eq!(parts.len(), 4, "{received}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], TRACE_ID, "the client's trace");
    assert_ne!(parts[2], CLIENT_SPAN, "the proxy's span, not the client's");
    assert_eq!(parts[3], "01");
    // The trace state travels with the context.
    assert_eq!(
        target.last().header("tracestate").as_deref(),
        Some("congo=t61rcWkgMzE")
    );

    let span = proxy_span(&exporter).await;
    let context = &span.span_context;
    assert_eq!(context.trace_id(), TraceId::from_hex(TRACE_ID).unwrap());
    assert_eq!(span.parent_span_id, SpanId::from_hex(CLIENT_SPAN).unwrap());
    assert_eq!(context.span_id(), SpanId::from_hex(parts[2]).unwrap());
}

/// Where no OpenTelemetry layer records the proxy's span (here a subscriber that enables
/// every span but has no such layer), the client's headers pass as sent.
///
/// (A subscriber of its own, not none: `tracing` caches whether a span is enabled per call
/// site, and a thread without any subscriber racing the other test's could leave the
/// proxy's span disabled there.)
#[tokio::test(flavor = "current_thread")]
async fn without_a_recorded_span_the_trace_context_passes_unchanged() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry());
    let target = echo_target().await;
    let server = app(&target.url()).await;
    let sent = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ("baggage", "userId=alice,serverNode=DF%2028"),
    ];
    let res = get_with(
        &server.url("/proxy/x"),
        &[
            ("x-test-user", "alice:ROLE_USER"),
            sent[0],
            sent[1],
            sent[2],
        ],
    )
    .await;
    assert_eq!(res.status, 200);
    let seen = target.last();
    for (name, value) in sent {
        assert_eq!(seen.header(name).as_deref(), Some(value), "{name}");
    }
}
