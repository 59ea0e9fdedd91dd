//! The demo's `--metrics-listen`: after a known mix of requests (disabled, forwarded,
//! unreachable, timeout, one identity many times, a refused password), its `/metrics`, parsed
//! by a Prometheus text parser (`prometheus-parse`), counts each exactly, the duration
//! histogram is a histogram with OpenTelemetry's buckets, and no label carries a user name, a
//! role, a token, a path or a query.
//!
//! The demo runs as its binary (`target/<profile>/examples/demo`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{
    Example, START, basic, closed_port, echo_target, fixture_keys_dir, full, get, get_with,
    remove_dir, send, silent_target, within, within_for,
};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;

/// The scrape, parsed.
async fn scrape(metrics: SocketAddr) -> (String, Vec<Sample>) {
    let reply = get(&format!("http://{metrics}/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = reply.text();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let samples = Scrape::parse(lines).unwrap().samples;
    (text, samples)
}

/// The series of `name` whose labels are exactly `labels`: at most one.
fn series<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    let found: Vec<_> = samples
        .iter()
        .filter(|s| s.metric == name && s.labels.len() == labels.len())
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert!(found.len() <= 1, "{name}{labels:?}: {found:?}");
    found.first().copied()
}

/// A counter's or gauge's value (0 when the series does not exist).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    match series(samples, name, labels).map(|s| &s.value) {
        None => 0.0,
        Some(Value::Counter(v) | Value::Gauge(v)) => *v,
        Some(other) => panic!("{name}: not a counter or gauge: {other:?}"),
    }
}

/// A histogram's observation count and its buckets' upper bounds.
fn histogram(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> (u64, Vec<f64>) {
    match series(samples, name, labels).map(|s| &s.value) {
        Some(Value::Histogram(buckets)) => {
            let count = buckets.last().unwrap().count;
            (count as u64, buckets.iter().map(|b| b.less_than).collect())
        }
        other => panic!("{name}{labels:?}: not a histogram: {other:?}"),
    }
}

const REQUESTS: &str = "tower_identity_proxy_requests_total";
const DURATION: &str = "http_client_request_duration_seconds";
const CACHE: &str = "tower_identity_proxy_token_cache_total";

/// The address the demo logs as `metrics on http://ADDR/metrics`, once it has.
async fn metrics_addr(demo: &Example) -> SocketAddr {
    within_for(START, "the demo logs its metrics address", async {
        loop {
            let stderr = demo.stderr();
            let addr = stderr.split("metrics on http://").nth(1).and_then(|rest| {
                rest.split("/metrics")
                    .next()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            });
            if let Some(addr) = addr {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Sets the demo's target (`None`: disabled) through `PUT /admin/proxy`, as the admin.
async fn set_target(demo: &Example, admin: &str, url: Option<&str>) {
    let put = http::Request::put(demo.url("/admin/proxy"))
        .header("content-type", "application/json")
        .header("authorization", admin)
        .body(full(json!({ "url": url }).to_string()))
        .unwrap();
    let reply = send(put).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn the_demo_serves_exact_metrics_on_a_listener_of_its_own() {
    let target = echo_target().await;
    let keys = fixture_keys_dir("demo-metrics");
    let demo = Example::start(
        "demo",
        &[
            "--listen",
            "127.0.0.1:0",
            "--keys",
            keys.to_str().unwrap(),
            "--user",
            "alice:alice-secret-password:ROLE_USER,ROLE_SECRET_PROJECT",
            "--user",
            "root:root-password:ROLE_ADMIN",
            "--upstream-timeout-ms",
            "300",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    let metrics = metrics_addr(&demo).await;
    let addr = demo.addr;
    assert_ne!(metrics, addr);
    let admin = basic("root", "root-password");

    let alice = basic("alice", "alice-secret-password");
    let as_alice = [("authorization", alice.as_str())];
    let url = |path: &str| format!("http://{addr}{path}");
    // A path and a query that must never become a label.
    let secret_path = "/proxy/secret-report/q3?token=query-secret&user=alice";

    // Disabled: 2.
    set_target(&demo, &admin, None).await;
    for _ in 0..2 {
        assert_eq!(get_with(&url(secret_path), &as_alice).await.status, 501);
    }
    // Forwarded: 6 as Alice (one identity many times: one miss, five hits, one signature),
    // 2 anonymous (one more miss and signature, one hit).
    set_target(&demo, &admin, Some(&target.url())).await;
    for _ in 0..6 {
        assert_eq!(get_with(&url(secret_path), &as_alice).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&url("/proxy/anonymous")).await.status, 200);
    }
    // A wrong password: refused by the identity extractor.
    let wrong = basic("alice", "not-her-password");
    let reply = get_with(&url(secret_path), &[("authorization", wrong.as_str())]).await;
    assert_eq!(reply.status, 401);
    // Unreachable: 3, Alice's token from the cache.
    let closed = closed_port().await;
    set_target(&demo, &admin, Some(&format!("http://{closed}"))).await;
    for _ in 0..3 {
        assert_eq!(get_with(&url(secret_path), &as_alice).await.status, 502);
    }
    // Timeout: 1.
    let silent = silent_target().await;
    set_target(&demo, &admin, Some(&silent)).await;
    let reply = within("a 504", get_with(&url(secret_path), &as_alice)).await;
    assert_eq!(reply.status, 504);
    // Requests outside the prefix are the app's: not counted.
    assert_eq!(get_with(&url("/api/whoami"), &as_alice).await.status, 200);

    // The public listener has no `/metrics`.
    assert_eq!(get(&url("/metrics")).await.status, 404);

    // The gauge comes down once each response is made; the 504's may be a moment behind
    // the client seeing it.
    let mut scraped = scrape(metrics).await;
    for _ in 0..100 {
        if value(&scraped.1, "tower_identity_proxy_in_flight", &[]) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        scraped = scrape(metrics).await;
    }
    let (text, samples) = scraped;
    assert_eq!(value(&samples, "tower_identity_proxy_in_flight", &[]), 0.0);

    let outcome = |o: &str| value(&samples, REQUESTS, &[("outcome", o)]);
    assert_eq!(outcome("disabled"), 2.0);
    assert_eq!(outcome("forwarded"), 8.0);
    assert_eq!(outcome("unauthenticated"), 1.0);
    assert_eq!(outcome("unreachable"), 3.0);
    assert_eq!(outcome("timeout"), 1.0);
    let total: f64 = samples
        .iter()
        .filter(|s| s.metric == REQUESTS)
        .map(|s| match s.value {
            Value::Counter(v) => v,
            _ => panic!("{s:?}"),
        })
        .sum();
    assert_eq!(total, 15.0, "{text}");

    // Alice: one miss, then 5 + 3 + 1 hits; anonymous: one miss, one hit.
    assert_eq!(value(&samples, CACHE, &[("result", "miss")]), 2.0);
    assert_eq!(value(&samples, CACHE, &[("result", "hit")]), 10.0);
    assert_eq!(
        value(&samples, "tower_identity_proxy_signatures_total", &[]),
        2.0
    );
    assert_eq!(
        value(&samples, "tower_identity_proxy_tunnels_open", &[]),
        0.0
    );

    // One observation per request sent: 8 answered 200 by the echo target, 3 unreachable,
    // 1 timeout; buckets as OpenTelemetry advises.
    let echo_port = target.addr().port().to_string();
    let answered = [
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
        ("server_address", "127.0.0.1"),
        ("server_port", echo_port.as_str()),
    ];
    let (count, bounds) = histogram(&samples, DURATION, &answered);
    assert_eq!(count, 8);
    let mut want: Vec<f64> =
        tower_identity_proxy::observability::HTTP_CLIENT_REQUEST_DURATION_BUCKETS.to_vec();
    want.push(f64::INFINITY);
    assert_eq!(bounds, want);
    let closed_port = closed.port().to_string();
    let unreachable = [
        ("http_request_method", "GET"),
        ("error_type", "unreachable"),
        ("server_address", "127.0.0.1"),
        ("server_port", closed_port.as_str()),
    ];
    assert_eq!(histogram(&samples, DURATION, &unreachable).0, 3);
    let silent_port = silent.rsplit(':').next().unwrap();
    let timed_out = [
        ("http_request_method", "GET"),
        ("error_type", "timeout"),
        ("server_address", "127.0.0.1"),
        ("server_port", silent_port),
    ];
    assert_eq!(histogram(&samples, DURATION, &timed_out).0, 1);
    assert_eq!(
        samples.iter().filter(|s| s.metric == DURATION).count(),
        3,
        "{text}"
    );

    // No label carries a user name, a role, a password, a token, a path or a query.
    let token = target.last().token();
    for secret in [
        "alice",
        "root",
        "anonymousUser",
        "ROLE_",
        "SECRET_PROJECT",
        "alice-secret-password",
        "not-her-password",
        "secret-report",
        "query-secret",
        "/proxy",
        "anonymous",
        "token=",
        "Bearer",
        "eyJ",
        token.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret:?} in\n{text}");
    }
    for sample in &samples {
        for (key, label) in sample.labels.iter() {
            assert!(
                [
                    "outcome",
                    "result",
                    "http_request_method",
                    "http_response_status_code",
                    "error_type",
                    "server_address",
                    "server_port",
                ]
                .contains(&key.as_str()),
                "{key}={label}"
            );
        }
    }
    remove_dir(&keys);
}
