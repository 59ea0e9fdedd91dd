//! Metrics and trace context: what the proxy records, under which names, and how a trace
//! crosses it.
//!
//! # Metrics
//!
//! The proxy records through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`, on by default): the library records, the application installs the exporter it
//! wants (Prometheus, StatsD, an OpenTelemetry bridge...). Without an exporter installed,
//! recording goes to the facade's no-op recorder and keeps nothing. The names and labels below are a
//! public contract: a change to them is a breaking change.
//!
//! | Name | Type | Labels | What it counts |
//! |---|---|---|---|
//! | `http.client.request.duration` (Prometheus: `http_client_request_duration_seconds`) | histogram, seconds | `http.request.method`, `http.response.status_code` (when a response came), `error.type` (when none came), `server.address`, `server.port` | one observation per request sent to the target, from sending it until the target's response head arrived (or the exchange failed), as OpenTelemetry's HTTP semantic conventions define it |
//! | `tower_identity_proxy_requests_total` | counter | `outcome` | every request under the prefix, once answered (see the outcomes below) |
//! | `tower_identity_proxy_in_flight` | gauge | | requests under the prefix not yet answered (their response head not produced yet) |
//! | `tower_identity_proxy_token_cache_total` | counter | `result`: `hit`, `miss` | token look-ups of a [`CachingSigner`](crate::jwt::CachingSigner); a request that waits for the signature another request started is a `hit` |
//! | `tower_identity_proxy_signatures_total` | counter | | tokens signed by a [`KeySigner`](crate::jwt::KeySigner) (a [`KeySet`](crate::jwt::KeySet)'s signer included) |
//! | `tower_identity_proxy_tunnels_open` | gauge | | WebSocket (upgrade) tunnels open |
//! | `tower_identity_proxy_verifications_total` | counter | `result`: `valid`, `invalid`, `missing` | requests checked by [`VerifyProxyJwtLayer`](crate::verify::VerifyProxyJwtLayer) on the target's side (`missing`: no bearer token, counted also when the layer is optional) |
//! | `tower_identity_proxy_jwks_fetches_total` | counter | `result`: `ok`, `error`, `timeout` | fetches of a remote JWK Set: by [`VerifyProxyJwtLayer`](crate::verify::VerifyProxyJwtLayer) on the target's side, and by [`OidcBearer`](crate::identity::OidcBearer) for an OpenID Connect provider's keys (a fetch skipped by the rate limit is not one) |
//!
//! The names are recorded as written here. `http.client.request.duration` and its labels
//! carry OpenTelemetry's names; the Prometheus exporter turns the dots into underscores
//! (`http_request_method`, `http_response_status_code`, `server_address`, `server_port`,
//! `error_type`) and, with its recommended naming
//! (`PrometheusBuilder::with_recommended_naming(true)`), adds the unit:
//! `http_client_request_duration_seconds`. Without buckets configured, that exporter renders a
//! histogram as a summary: give it [`HTTP_CLIENT_REQUEST_DURATION_BUCKETS`], the buckets
//! OpenTelemetry advises (5 ms … 10 s). [`describe`] registers the descriptions and the unit.
//!
//! Label values:
//! - `outcome`: `forwarded` (the target's response was relayed, a `101` included),
//!   `disabled`, `refused` (the request rules: `400`, `405`, `501`), `loop`, `misdirected`
//!   (`421`: the `Host` names none of the app's public origins),
//!   `max_forwards` (`OPTIONS` with `Max-Forwards: 0`, answered by the proxy), `unauthenticated`
//!   (the identity extractor refused the caller or found no identity), `signing_failed`,
//!   `unreachable`, `bad_response`, `timeout`, `request_timeout` (the client's upload
//!   stalled), `body_too_large`, `shutting_down`, `not_ready` (a replica whose shared state
//!   or signing key is not ready yet), and `cancelled` (the client went away before
//!   the answer). Each [`ProxyErrorKind`] has one, see [`outcome`];
//! - `http.request.method`: `GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `PATCH`, `OPTIONS`,
//!   `CONNECT`, `TRACE`, or `_OTHER` for any other method;
//! - `http.response.status_code`: the target's status code, `"200"`;
//! - `error.type`: `unreachable` (no connection, TLS refused), `bad_response` (connected, no
//!   valid response head), `timeout`, `request_timeout` (the client's upload stalled),
//!   `request_body` (the client's body broke or outgrew a limit on the way);
//! - `server.address`, `server.port`: the target's host and port (the scheme's default port
//!   when the URL names none). Bounded by the targets set.
//!
//! # Privacy and cardinality
//!
//! No label ever carries a user name, a role, a token, a request path or a query: the values
//! are the fixed words above, a status code, a method from a fixed list, and the target's
//! host and port. A label per user or per path would make one time series per user or path
//! (a memory cost for every scraper, and a list of who used what in the monitoring system).
//!
//! # Dashboards
//!
//! Two PromQL queries, with the Prometheus exporter's names:
//!
//! ```text
//! # The share of requests the proxy answered itself with an error, over 5 minutes:
//! sum(rate(tower_identity_proxy_requests_total{outcome!~"forwarded|max_forwards"}[5m]))
//!   / sum(rate(tower_identity_proxy_requests_total[5m]))
//!
//! # The target's 99th-percentile latency, per target:
//! histogram_quantile(0.99, sum by (le, server_address, server_port)
//!   (rate(http_client_request_duration_seconds_bucket[5m])))
//! ```
//!
//! # Cost
//!
//! Every label value is a `&'static str` or (for the target's host and port) shared with
//! the target, made once when the target is set; the counters and gauges use keys built at
//! compile time, so recording allocates nothing. The histogram's key holds four labels and
//! is built per request sent (one small allocation). See `BENCHMARKS.md` for the cost with
//! and without an exporter installed.
//!
//! # Responses carry their kind
//!
//! Every response the proxy makes itself (an error, `501` when disabled, `401` from the
//! identity extractor, the `200` to `OPTIONS` with `Max-Forwards: 0`) carries its
//! [`ProxyErrorKind`] in its extensions, so that an outer layer (tower-http's `TraceLayer`,
//! a metrics layer) can tell a `502` "unreachable" from a `502` "bad response". A response
//! from the target carries none.
//!
//! ```
//! # use tower_identity_proxy::ProxyErrorKind;
//! # fn classify<B>(res: &http::Response<B>) -> &'static str {
//! match res.extensions().get::<ProxyErrorKind>() {
//!     None => "from the target",
//!     Some(ProxyErrorKind::Unreachable) => "target down",
//!     Some(_) => "answered by the proxy",
//! }
//! # }
//! ```
//!
//! # Trace context
//!
//! The W3C trace-context headers of the client (`traceparent`, `tracestate`) and its
//! `baggage` reach the target unchanged: by default the proxy takes no part in the trace.
//! With the `opentelemetry` feature (off by default), the proxy's span for a request
//! (`proxy`, at debug level, target `tower_identity_proxy`) takes the client's trace context
//! as its parent, and the target receives the context of that span: the same trace id, the
//! proxy span's id as the parent. It needs a `tracing-opentelemetry` layer that records the
//! proxy's span and a global text-map propagator
//! (`opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new())`); where
//! the span is not recorded, or no propagator is set, the client's headers pass unchanged.
//!
//! # Example
//!
//! A Prometheus exporter, its buckets, and the rendered text:
//!
//! ```
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use tower_identity_proxy::observability::{self, HTTP_CLIENT_REQUEST_DURATION_BUCKETS};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let recorder = PrometheusBuilder::new()
//!     .with_recommended_naming(true)
//!     .set_buckets_for_metric(
//!         Matcher::Prefix("http_client_request_duration".into()),
//!         &HTTP_CLIENT_REQUEST_DURATION_BUCKETS,
//!     )?
//!     .build_recorder();
//! let handle = recorder.handle();
//! metrics::set_global_recorder(recorder)?;
//! observability::describe();
//! // ... build the `ProxyLayer`, serve; then on `GET /metrics` (on a listener of its own):
//! let text = handle.render();
//! # let _ = text;
//! # Ok(()) }
//! ```
//!
//! [`ProxyErrorKind`]: crate::ProxyErrorKind

use crate::error::ProxyErrorKind;

/// `http.client.request.duration`: the histogram of requests sent to the target, in seconds.
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
/// `tower_identity_proxy_requests_total{outcome}`: every request under the prefix.
pub const REQUESTS_TOTAL: &str = "tower_identity_proxy_requests_total";
/// `tower_identity_proxy_in_flight`: requests under the prefix not yet answered.
pub const IN_FLIGHT: &str = "tower_identity_proxy_in_flight";
/// `tower_identity_proxy_token_cache_total{result}`: token cache hits and misses.
pub const TOKEN_CACHE_TOTAL: &str = "tower_identity_proxy_token_cache_total";
/// `tower_identity_proxy_signatures_total`: tokens signed.
pub const SIGNATURES_TOTAL: &str = "tower_identity_proxy_signatures_total";
/// `tower_identity_proxy_tunnels_open`: WebSocket tunnels open.
pub const TUNNELS_OPEN: &str = "tower_identity_proxy_tunnels_open";
/// `tower_identity_proxy_verifications_total{result}`: tokens checked on the target's side.
pub const VERIFICATIONS_TOTAL: &str = "tower_identity_proxy_verifications_total";
/// `tower_identity_proxy_jwks_fetches_total{result}`: remote JWK Set fetches.
pub const JWKS_FETCHES_TOTAL: &str = "tower_identity_proxy_jwks_fetches_total";

/// The bucket boundaries OpenTelemetry advises for `http.client.request.duration`, in
/// seconds.
pub const HTTP_CLIENT_REQUEST_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The `outcome` label of `tower_identity_proxy_requests_total` for a response the proxy made
/// itself, of this kind.
pub fn outcome(kind: ProxyErrorKind) -> &'static str {
    match kind {
        ProxyErrorKind::Disabled => "disabled",
        ProxyErrorKind::BadRequest(_)
        | ProxyErrorKind::MethodNotAllowed(_)
        | ProxyErrorKind::NotImplemented(_) => "refused",
        ProxyErrorKind::LoopDetected => "loop",
        ProxyErrorKind::Misdirected => "misdirected",
        ProxyErrorKind::MaxForwardsReached => "max_forwards",
        ProxyErrorKind::Unauthenticated => "unauthenticated",
        ProxyErrorKind::Signing => "signing_failed",
        ProxyErrorKind::Unreachable => "unreachable",
        ProxyErrorKind::BadResponse(_) => "bad_response",
        ProxyErrorKind::Timeout => "timeout",
        ProxyErrorKind::RequestTimeout => "request_timeout",
        ProxyErrorKind::BodyTooLarge => "body_too_large",
        ProxyErrorKind::ShuttingDown => "shutting_down",
        ProxyErrorKind::NotReady => "not_ready",
    }
}

/// Registers the description (and, for the histogram, the unit) of every metric with the
/// installed recorder. Call it once the recorder is installed: exporters use the unit for
/// the name (`_seconds`) and the descriptions for `# HELP`. Without the `metrics` feature it
/// does nothing.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_histogram!(
            HTTP_CLIENT_REQUEST_DURATION,
            Unit::Seconds,
            "Duration of HTTP client requests (requests sent to the proxy target)."
        );
        describe_counter!(
            REQUESTS_TOTAL,
            "Requests under the proxy prefix, by outcome."
        );
        describe_gauge!(
            IN_FLIGHT,
            "Requests under the proxy prefix not yet answered."
        );
        describe_counter!(
            TOKEN_CACHE_TOTAL,
            "Identity token cache look-ups, by result."
        );
        describe_counter!(SIGNATURES_TOTAL, "Identity tokens signed.");
        describe_gauge!(TUNNELS_OPEN, "WebSocket tunnels open.");
        describe_counter!(
            VERIFICATIONS_TOTAL,
            "Proxy tokens checked by the target's verifier, by result."
        );
        describe_counter!(JWKS_FETCHES_TOTAL, "Remote JWK Set fetches, by result.");
    }
}

/// What the rest of the crate records; nothing without the `metrics` feature.
pub(crate) mod record {
    #[cfg(feature = "metrics")]
    pub(crate) use enabled::*;

    #[cfg(not(feature = "metrics"))]
    pub(crate) use disabled::*;

    #[cfg(feature = "metrics")]
    mod enabled {
        use std::sync::Arc;

        use http::{Method, StatusCode};
        use metrics::{Key, Label, Level, Metadata};

        use super::super::*;

        static META: Metadata<'static> =
            Metadata::new("tower_identity_proxy", Level::INFO, Some(module_path!()));

        /// A key built at compile time: name and literal labels.
        macro_rules! key {
            ($name:expr $(, $k:literal => $v:literal)*) => {{
                static LABELS: [Label; 0 $(+ { let _ = $k; 1 })*] =
                    [$(Label::from_static_parts($k, $v)),*];
                static KEY: Key = Key::from_static_parts($name, &LABELS);
                &KEY
            }};
        }

        fn count(key: &'static Key) {
            metrics::with_recorder(|r| r.register_counter(key, &META).increment(1));
        }

        fn gauge(key: &'static Key, delta: f64) {
            metrics::with_recorder(|r| r.register_gauge(key, &META).increment(delta));
        }

        /// `tower_identity_proxy_requests_total{outcome}` for the request's answer: from the
        /// target (`None`), or made by the proxy (its kind).
        pub(crate) fn request(kind: Option<ProxyErrorKind>) {
            count(match kind.map(outcome) {
                None => key!(REQUESTS_TOTAL, "outcome" => "forwarded"),
                Some("disabled") => key!(REQUESTS_TOTAL, "outcome" => "disabled"),
                Some("refused") => key!(REQUESTS_TOTAL, "outcome" => "refused"),
                Some("loop") => key!(REQUESTS_TOTAL, "outcome" => "loop"),
                Some("misdirected") => key!(REQUESTS_TOTAL, "outcome" => "misdirected"),
                Some("max_forwards") => key!(REQUESTS_TOTAL, "outcome" => "max_forwards"),
                Some("unauthenticated") => key!(REQUESTS_TOTAL, "outcome" => "unauthenticated"),
                Some("signing_failed") => key!(REQUESTS_TOTAL, "outcome" => "signing_failed"),
                Some("unreachable") => key!(REQUESTS_TOTAL, "outcome" => "unreachable"),
                Some("bad_response") => key!(REQUESTS_TOTAL, "outcome" => "bad_response"),
                Some("timeout") => key!(REQUESTS_TOTAL, "outcome" => "timeout"),
                Some("request_timeout") => key!(REQUESTS_TOTAL, "outcome" => "request_timeout"),
                Some("body_too_large") => key!(REQUESTS_TOTAL, "outcome" => "body_too_large"),
                Some("shutting_down") => key!(REQUESTS_TOTAL, "outcome" => "shutting_down"),
                Some("not_ready") => key!(REQUESTS_TOTAL, "outcome" => "not_ready"),
                // `outcome` returns one of the words above: a new kind gets its arm there
                // and here (a unit test checks every kind).
                Some(_) => key!(REQUESTS_TOTAL, "outcome" => "other"),
            });
        }

        /// `tower_identity_proxy_requests_total{outcome="cancelled"}`.
        pub(crate) fn cancelled() {
            count(key!(REQUESTS_TOTAL, "outcome" => "cancelled"));
        }

        /// `tower_identity_proxy_in_flight` up (`true`) or down.
        pub(crate) fn in_flight(up: bool) {
            gauge(key!(IN_FLIGHT), if up { 1.0 } else { -1.0 });
        }

        /// `tower_identity_proxy_token_cache_total{result}`.
        pub(crate) fn token_cache(hit: bool) {
            count(if hit {
                key!(TOKEN_CACHE_TOTAL, "result" => "hit")
            } else {
                key!(TOKEN_CACHE_TOTAL, "result" => "miss")
            });
        }

        /// `tower_identity_proxy_signatures_total`.
        pub(crate) fn signature() {
            count(key!(SIGNATURES_TOTAL));
        }

        /// `tower_identity_proxy_tunnels_open` up (`true`) or down.
        pub(crate) fn tunnel(up: bool) {
            gauge(key!(TUNNELS_OPEN), if up { 1.0 } else { -1.0 });
        }

        /// The result of one token check on the target's side.
        #[derive(Clone, Copy, Debug)]
        pub(crate) enum Verification {
            Valid,
            Invalid,
            Missing,
        }

        /// `tower_identity_proxy_verifications_total{result}`.
        pub(crate) fn verification(result: Verification) {
            count(match result {
                Verification::Valid => key!(VERIFICATIONS_TOTAL, "result" => "valid"),
                Verification::Invalid => key!(VERIFICATIONS_TOTAL, "result" => "invalid"),
                Verification::Missing => key!(VERIFICATIONS_TOTAL, "result" => "missing"),
            });
        }

        /// The result of one JWK Set fetch.
        #[derive(Clone, Copy, Debug)]
        pub(crate) enum Fetch {
            Ok,
            Error,
            Timeout,
        }

        /// `tower_identity_proxy_jwks_fetches_total{result}`.
        pub(crate) fn jwks_fetch(result: Fetch) {
            count(match result {
                Fetch::Ok => key!(JWKS_FETCHES_TOTAL, "result" => "ok"),
                Fetch::Error => key!(JWKS_FETCHES_TOTAL, "result" => "error"),
                Fetch::Timeout => key!(JWKS_FETCHES_TOTAL, "result" => "timeout"),
            });
        }

        /// A target's `server.address` and `server.port` labels, made once per target.
        #[derive(Clone, Debug)]
        pub(crate) struct Server {
            labels: [Label; 2],
            /// Tells these labels from any others made in the process at a glance (the keys
            /// kept per thread are found by it).
            id: u64,
        }

        impl PartialEq for Server {
            fn eq(&self, other: &Self) -> bool {
                self.labels == other.labels
            }
        }

        impl Eq for Server {}

        impl Server {
            pub(crate) fn new(host: &str, port: u16) -> Self {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                // An IPv6 literal without its brackets, as OpenTelemetry writes it.
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let host: Arc<str> = Arc::from(host);
                let port: Arc<str> = Arc::from(port.to_string());
                Self {
                    labels: [
                        Label::new("server.address", host),
                        Label::new("server.port", port),
                    ],
                    id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                }
            }
        }

        /// How a request sent to the target ended, for `http.client.request.duration`.
        #[derive(Clone, Copy, Debug)]
        pub(crate) enum Exchange {
            /// A response head came.
            Response(StatusCode),
            /// None came: the `error.type` label.
            Failed(&'static str),
        }

        /// One observation of `http.client.request.duration`: the time since `sent`.
        pub(crate) fn upstream(
            method: &Method,
            server: &Server,
            exchange: Exchange,
            sent: tokio::time::Instant,
        ) {
            let secs = sent.elapsed().as_secs_f64();
            let method = method_str(method);
            let status = match exchange {
                Exchange::Response(status) => status,
                Exchange::Failed(error) => {
                    let key = upstream_key(
                        method,
                        server,
                        Label::from_static_parts("error.type", error),
                    );
                    metrics::with_recorder(|r| r.register_histogram(&key, &META).record(secs));
                    return;
                }
            };
            RESPONSE_KEYS.with(|keys| {
                let mut keys = keys.borrow_mut();
                let key = keys.get(method, server, status);
                metrics::with_recorder(|r| r.register_histogram(key, &META).record(secs));
            });
        }

        fn upstream_key(method: &'static str, server: &Server, outcome: Label) -> Key {
            let [address, port] = &server.labels;
            let labels = vec![
                Label::from_static_parts("http.request.method", method),
                outcome,
                address.clone(),
                port.clone(),
            ];
            Key::from_parts(HTTP_CLIENT_REQUEST_DURATION, labels)
        }

        thread_local! {
            /// This thread's last keys of `http.client.request.duration` for responses: making
            /// one (its labels in a vector, hashed) costs more than the rest of an observation.
            static RESPONSE_KEYS: std::cell::RefCell<ResponseKeys> =
                const { std::cell::RefCell::new(ResponseKeys { keys: Vec::new(), next: 0 }) };
        }

        /// Up to [`ResponseKeys::MAX`] keys, the oldest replaced first.
        struct ResponseKeys {
            /// Method, [`Server::id`], status, and their key.
            keys: Vec<(&'static str, u64, StatusCode, Key)>,
            next: usize,
        }

        impl ResponseKeys {
            const MAX: usize = 8;

            fn get(&mut self, method: &'static str, server: &Server, status: StatusCode) -> &Key {
                let found = self
                    .keys
                    .iter()
                    .position(|(m, id, st, _)| *st == status && *id == server.id && *m == method);
                let at = match found {
                    Some(at) => at,
                    None => {
                        let status_label = Label::from_static_parts(
                            "http.response.status_code",
                            status_str(status),
                        );
                        let entry = (
                            method,
                            server.id,
                            status,
                            upstream_key(method, server, status_label),
                        );
                        if self.keys.len() < Self::MAX {
                            self.keys.push(entry);
                            self.keys.len() - 1
                        } else {
                            let at = self.next;
                            self.next = (at + 1) % Self::MAX;
                            self.keys[at] = entry;
                            at
                        }
                    }
                };
                &self.keys[at].3
            }
        }

        /// The method as OpenTelemetry names it: one of the known methods, or `_OTHER`.
        fn method_str(method: &Method) -> &'static str {
            match *method {
                Method::GET => "GET",
                Method::HEAD => "HEAD",
                Method::POST => "POST",
                Method::PUT => "PUT",
                Method::DELETE => "DELETE",
                Method::PATCH => "PATCH",
                Method::OPTIONS => "OPTIONS",
                Method::CONNECT => "CONNECT",
                Method::TRACE => "TRACE",
                _ => "_OTHER",
            }
        }

        /// Every status code's three digits, made at compile time, so a label needs no
        /// formatting.
        static STATUS_DIGITS: [[u8; 3]; 1000] = {
            let mut table = [[0u8; 3]; 1000];
            let mut i = 0;
            while i < 1000 {
                table[i] = [
                    b'0' + (i / 100) as u8,
                    b'0' + (i / 10 % 10) as u8,
                    b'0' + (i % 10) as u8,
                ];
                i += 1;
            }
            table
        };

        fn status_str(status: StatusCode) -> &'static str {
            STATUS_DIGITS
                .get(usize::from(status.as_u16()))
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .unwrap_or("_OTHER")
        }

        #[cfg(test)]
        mod tests {
            use super::*;

            #[test]
            fn status_codes_are_their_digits() {
                for code in [100, 101, 200, 204, 404, 502, 599, 999] {
                    let status = StatusCode::from_u16(code).unwrap();
                    assert_eq!(status_str(status), status.as_str());
                }
            }

            /// The cached keys are the keys: whatever the mix of targets, methods and
            /// statuses, and however often the oldest are replaced, each observation gets
            /// the key made from its own labels.
            #[test]
            fn cached_response_keys_carry_their_own_labels() {
                let servers: Vec<Server> =
                    (0..5).map(|i| Server::new("127.0.0.1", 8000 + i)).collect();
                let methods = [
                    Method::GET,
                    Method::POST,
                    Method::from_bytes(b"PURGE").unwrap(),
                ];
                let statuses = [
                    StatusCode::OK,
                    StatusCode::NOT_FOUND,
                    StatusCode::BAD_GATEWAY,
                ];
                let mut keys = ResponseKeys {
                    keys: Vec::new(),
                    next: 0,
                };
                // 45 combinations in an order that revisits some while others push them out.
                for round in 0..400usize {
                    let server = &servers[round * 7 % servers.len()];
                    let method = method_str(&methods[round * 5 % methods.len()]);
                    let status = statuses[round * 3 / 2 % statuses.len()];
                    let want = upstream_key(
                        method,
                        server,
                        Label::from_static_parts("http.response.status_code", status_str(status)),
                    );
                    assert_eq!(keys.get(method, server, status), &want, "round {round}");
                    assert!(keys.keys.len() <= ResponseKeys::MAX);
                }
            }
        }
    }

    #[cfg(not(feature = "metrics"))]
    mod disabled {
        use http::{Method, StatusCode};

        use crate::error::ProxyErrorKind;

        pub(crate) fn request(_: Option<ProxyErrorKind>) {}
        pub(crate) fn cancelled() {}
        pub(crate) fn in_flight(_: bool) {}
        pub(crate) fn token_cache(_: bool) {}
        pub(crate) fn signature() {}
        pub(crate) fn tunnel(_: bool) {}

        #[derive(Clone, Copy, Debug)]
        pub(crate) enum Verification {
            Valid,
            Invalid,
            Missing,
        }
        pub(crate) fn verification(_: Verification) {}

        #[derive(Clone, Copy, Debug)]
        pub(crate) enum Fetch {
            Ok,
            Error,
            Timeout,
        }
        pub(crate) fn jwks_fetch(_: Fetch) {}

        #[derive(Clone, Debug, PartialEq, Eq)]
        pub(crate) struct Server;

        impl Server {
            pub(crate) fn new(_: &str, _: u16) -> Self {
                Self
            }
        }

        // Made on the request path, read only when recording.
        #[allow(dead_code)]
        #[derive(Clone, Copy, Debug)]
        pub(crate) enum Exchange {
            Response(StatusCode),
            Failed(&'static str),
        }

        pub(crate) fn upstream(_: &Method, _: &Server, _: Exchange, _: tokio::time::Instant) {}
    }
}

/// W3C trace context through the proxy's span (feature `opentelemetry`).
#[cfg(feature = "opentelemetry")]
pub(crate) mod trace {
    use http::HeaderMap;
    use opentelemetry_http::{HeaderExtractor, HeaderInjector};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    /// Makes the client's trace context (from its headers, through the global propagator)
    /// the parent of the proxy's `span`.
    pub(crate) fn adopt(span: &tracing::Span, headers: &HeaderMap) {
        if span.is_disabled() {
            return;
        }
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(headers))
        });
        // Fails only when the span is not recorded by an OpenTelemetry layer: nothing to do.
        let _ = span.set_parent(parent);
    }

    /// Writes the current span's context (the proxy's span) into the headers of the request
    /// to the target, through the global propagator; the client's headers stay when the span
    /// is not recorded.
    pub(crate) fn inject(headers: &mut HeaderMap) {
        let span = tracing::Span::current();
        if span.is_disabled() {
            return;
        }
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(headers));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_snake_case_and_recorded_under_its_own_word() {
        let kinds = [
            ProxyErrorKind::Disabled,
            ProxyErrorKind::BadRequest("x"),
            ProxyErrorKind::LoopDetected,
            ProxyErrorKind::Misdirected,
            ProxyErrorKind::MethodNotAllowed("x"),
            ProxyErrorKind::NotImplemented("x"),
            ProxyErrorKind::MaxForwardsReached,
            ProxyErrorKind::Unauthenticated,
            ProxyErrorKind::Signing,
            ProxyErrorKind::Unreachable,
            ProxyErrorKind::BadResponse("x"),
            ProxyErrorKind::Timeout,
            ProxyErrorKind::RequestTimeout,
            ProxyErrorKind::BodyTooLarge,
            ProxyErrorKind::ShuttingDown,
            ProxyErrorKind::NotReady,
        ];
        for kind in kinds {
            let word = outcome(kind);
            assert!(
                !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{word}"
            );
            assert_ne!(word, "other", "{kind:?}");
        }
    }

    /// The `key!` arms of `record::request` are written out by hand: each outcome must land
    /// under its own word, never `other`.
    #[cfg(feature = "metrics")]
    #[test]
    fn every_kind_has_its_own_series() {
        use metrics_exporter_prometheus::PrometheusBuilder;
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for kind in [
                ProxyErrorKind::Disabled,
                ProxyErrorKind::BadRequest("x"),
                ProxyErrorKind::LoopDetected,
                ProxyErrorKind::Misdirected,
                ProxyErrorKind::MaxForwardsReached,
                ProxyErrorKind::Unauthenticated,
                ProxyErrorKind::Signing,
                ProxyErrorKind::Unreachable,
                ProxyErrorKind::BadResponse("x"),
                ProxyErrorKind::Timeout,
                ProxyErrorKind::RequestTimeout,
                ProxyErrorKind::BodyTooLarge,
                ProxyErrorKind::ShuttingDown,
                ProxyErrorKind::NotReady,
            ] {
                record::request(Some(kind));
            }
        });
        let text = handle.render();
        assert!(!text.contains("\"other\""), "{text}");
        assert_eq!(
            text.matches("tower_identity_proxy_requests_total{").count(),
            14
        );
    }
}
