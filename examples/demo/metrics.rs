//! The demo's `--metrics-listen`: a Prometheus recorder and its `GET /metrics`.

use std::{net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;
use tower_identity_proxy::observability;

use crate::Error;

/// Installs a Prometheus recorder for the process (the duration histogram with the buckets
/// OpenTelemetry advises, so a histogram rather than a summary; names as Prometheus
/// recommends: `_seconds`, `_total`) and serves `GET /metrics` on `listen`, a listener of
/// its own, in a task; returns the address it is bound to.
pub(crate) async fn serve(listen: &str) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} for metrics: {e}"))?;
    let addr = listener.local_addr()?;
    let recorder = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_buckets_for_metric(
            Matcher::Prefix("http_client_request_duration".into()),
            &observability::HTTP_CLIENT_REQUEST_DURATION_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    observability::describe();
    // Histogram samples wait in the recorder until drained: drain them now and then,
    // scraped or not.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let text = handle.render();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}
