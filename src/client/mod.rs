//! [`ProxyClient`]: the pooled client every clone of a layer forwards through, built on
//! hyper-util's composable pool services over hyper's `client::conn`.
//!
//! One client is shared by all services built from a [`ProxyLayer`](crate::ProxyLayer). Its
//! pools are kept per worker thread: a request takes a connection made on its own thread
//! and gives it back there, so that with a runtime per thread (as the demo runs) no lock is
//! contended and no task is spawned per request. Per target and thread, HTTP/1.1
//! connections are cached, one HTTP/2 connection (h2c, or `h2` chosen by ALPN) is shared,
//! and upgrades have HTTP/1.1 connections of their own. Defaults suit a proxy in front of
//! typical targets:
//! - `TCP_NODELAY` on, connect timeout 10 s;
//! - idle pooled connections are closed after 4.5 s, below the 5 s keep-alive of Node.js
//!   and similar servers, so the pool rarely picks a connection the target is closing;
//! - only requests that were never written are retried: a reused connection that closed
//!   before the request went out hands the request back untouched, body included (hyper's
//!   `try_send_request`), and it is sent again on another connection; once any byte was
//!   written, a closed connection surfaces as `502`, never as a hang or a replay, whatever
//!   the body;
//! - an HTTP/1.1 connection goes back to its pool once the response has been read to its
//!   end; one whose response was not (the client went away) is closed;
//! - https targets (feature `https`, on by default) through rustls with the aws-lc-rs
//!   provider passed explicitly, certificates verified against the webpki roots (feature
//!   `webpki-roots`), the platform's roots (`native-roots`) and any extra root given; ALPN
//!   offers `h2` and `http/1.1`. There is no switch that turns verification off; a
//!   certificate that does not verify (unknown issuer, wrong name, expired) is a `502`;
//! - plain http targets speak HTTP/1.1, or HTTP/2 with prior knowledge when
//!   [`ClientBuilder::http2_prior_knowledge`] is set (h2c, as gRPC backends need);
//! - no HTTP/2 keep-alive pings: see [`ClientBuilder::http2_keep_alive_interval`] for why,
//!   and when to turn them on;
//! - upgrade requests (WebSocket) always go over HTTP/1.1, through connections of their
//!   own (ALPN offers `http/1.1` alone), since HTTP/2 has no `Upgrade`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_identity_proxy::client::ProxyClient;
//!
//! let client = ProxyClient::builder()
//!     .pool_idle_timeout(Duration::from_secs(2))
//!     .pool_max_idle_per_host(16)
//!     .http2_prior_knowledge(true)
//!     .build()?;
//! # let _ = client;
//! # Ok::<(), tower_identity_proxy::ConfigError>(())
//! ```

mod conn;
mod pool;
mod received;

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::connect::HttpConnector;

pub(crate) use self::{
    pool::{Host, Origin, Sending},
    received::Received,
};
use crate::{
    client::{
        conn::H2KeepAlive,
        pool::{Route, Transport},
    },
    error::{BoxError, ConfigError},
    target::Target,
};

/// The body type of requests sent to the target.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// The pooled client used to reach the target. Cheap to clone: clones share the pools.
#[derive(Clone)]
pub struct ProxyClient {
    transport: Arc<dyn Transport>,
    h2c: bool,
}

impl ProxyClient {
    /// A client with the defaults listed in the [module docs](self).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Tls`] if the TLS configuration cannot be built (see
    /// [`ClientBuilder::build`]).
    pub fn new() -> Result<Self, ConfigError> {
        Self::builder().build()
    }

    /// A builder to change the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Sends a request to `target` (the request's URI in origin form, or absolute at the
    /// target, and its `Host` the target's: [`Target::host_header`]); an `upgrade` request
    /// goes over HTTP/1.1 whatever the target would otherwise negotiate.
    pub(crate) fn send(
        &self,
        target: &Target,
        req: Request<UpstreamBody>,
        upgrade: bool,
    ) -> Sending {
        let route = if upgrade { Route::Upgrade } else { Route::Auto };
        self.transport
            .send(target.origin().clone(), req, Host::Given, route)
    }
}

impl fmt::Debug for ProxyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyClient")
            .field("h2c", &self.h2c)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ProxyClient`].
#[derive(Clone)]
pub struct ClientBuilder {
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    h2c: bool,
    h2_keep_alive: H2KeepAlive,
    #[cfg(feature = "https")]
    tls: TlsOptions,
}

/// The longest keep-alive interval or timeout, or pool idle timeout, taken as given; longer
/// ones are shortened to it (hyper and hyper-util add them to instants, which must not
/// overflow).
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(24 * 60 * 60);

#[cfg(feature = "https")]
#[derive(Clone, Default)]
struct TlsOptions {
    extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    client_auth: Option<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        std::sync::Arc<rustls_pki_types::PrivateKeyDer<'static>>,
    )>,
    #[cfg_attr(not(feature = "native-roots"), allow(dead_code))]
    native_roots: bool,
    no_webpki_roots: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_millis(4500),
            pool_max_idle_per_host: 256,
            h2c: false,
            h2_keep_alive: H2KeepAlive::default(),
            #[cfg(feature = "https")]
            tls: TlsOptions::default(),
        }
    }
}

impl ClientBuilder {
    /// How long a connection attempt may take before it fails (`502`). Default is 10 seconds.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept. Default is 4.5 seconds, below the 5 s
    /// keep-alive timeout of Node.js servers. Longer than a day is taken as a day (hyper-util
    /// adds it to an instant, which `Duration::MAX` would overflow).
    #[must_use]
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout.min(MAX_KEEP_ALIVE);
        self
    }

    /// The most idle HTTP/1.1 connections kept per target, by each worker thread's pool.
    /// Default is 256; 0 closes each connection after its exchange.
    #[must_use]
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Speaks HTTP/2 with prior knowledge (h2c) to plain-http targets, as gRPC backends
    /// need. Default is off: HTTP/1.1. (https targets negotiate by ALPN either way.)
    #[must_use]
    pub fn http2_prior_knowledge(mut self, on: bool) -> Self {
        self.h2c = on;
        self
    }

    /// Sends an HTTP/2 `PING` to the target after this long without receiving a frame on a
    /// connection, and closes the connection when no acknowledgement comes within
    /// [`http2_keep_alive_timeout`](Self::http2_keep_alive_timeout): requests on it fail
    /// (`502`) at once instead of waiting for the upstream timeouts, and the pool opens a new
    /// connection for the next request. Applies to HTTP/2 connections only: h2c
    /// ([`http2_prior_knowledge`](Self::http2_prior_knowledge)) and https targets that
    /// choose `h2`.
    ///
    /// Default is `None`, no pings, because:
    /// - gRPC servers, with grpc-go's and grpc-java's defaults, answer a client that pings
    ///   more often than every five minutes while they send nothing with `GOAWAY`
    ///   (`too_many_pings`), which cuts the calls in flight;
    /// - requests are already bounded without them: the target's headers by
    ///   [`upstream_timeout`](crate::ProxyLayer::upstream_timeout) (30 s), a silent body by
    ///   [`upstream_body_timeout`](crate::ProxyLayer::upstream_body_timeout) (60 s), and idle
    ///   pooled connections are dropped after
    ///   [`pool_idle_timeout`](Self::pool_idle_timeout) (4.5 s).
    ///
    /// Turn them on for long-lived HTTP/2 streams that may stay silent (gRPC server
    /// streaming with the body timeout off), or when a network path (a NAT, a firewall)
    /// drops connections without a reset; keep the interval above what the target allows.
    /// `None` or [`Duration::ZERO`] turns pings off; intervals longer than a day are taken
    /// as a day.
    #[must_use]
    pub fn http2_keep_alive_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.h2_keep_alive.interval = interval
            .into()
            .filter(|i| !i.is_zero())
            .map(|i| i.min(MAX_KEEP_ALIVE));
        self
    }

    /// How long to wait for the acknowledgement of a keep-alive `PING` before closing the
    /// connection. Default is 20 seconds (hyper's). Has no effect unless
    /// [`http2_keep_alive_interval`](Self::http2_keep_alive_interval) is set; longer than a
    /// day is taken as a day.
    #[must_use]
    pub fn http2_keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.h2_keep_alive.timeout = timeout.min(MAX_KEEP_ALIVE);
        self
    }

    /// Whether keep-alive pings are also sent on connections with no request in flight
    /// (idle in the pool). Default is off: pings only while a request or stream is open;
    /// an idle connection is closed by the pool after
    /// [`pool_idle_timeout`](Self::pool_idle_timeout) anyway. Has no effect unless
    /// [`http2_keep_alive_interval`](Self::http2_keep_alive_interval) is set.
    #[must_use]
    pub fn http2_keep_alive_while_idle(mut self, on: bool) -> Self {
        self.h2_keep_alive.while_idle = on;
        self
    }

    /// Trusts the root certificates in this PEM data too (a private CA), for https targets.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Tls`] if the PEM holds no certificate.
    #[cfg(feature = "https")]
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, ConfigError> {
        use rustls_pki_types::{CertificateDer, pem::PemObject};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|_| ConfigError::Tls("the root certificate PEM cannot be read".into()))?;
        if certs.is_empty() {
            return Err(ConfigError::Tls(
                "no certificate in the root certificate PEM".into(),
            ));
        }
        self.tls.extra_roots.extend(certs);
        Ok(self)
    }

    /// Trusts the platform's root certificates too (feature `native-roots`).
    #[cfg(feature = "native-roots")]
    #[must_use]
    pub fn native_roots(mut self, on: bool) -> Self {
        self.tls.native_roots = on;
        self
    }

    /// Does not trust the webpki (Mozilla) roots: only the extra and platform roots. A
    /// client left with no root at all is refused by [`build`](Self::build).
    #[cfg(feature = "https")]
    #[must_use]
    pub fn without_webpki_roots(mut self) -> Self {
        self.tls.no_webpki_roots = true;
        self
    }

    /// Presents this client certificate chain and key to https targets (mTLS).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Tls`] if the PEM data holds no certificate or no private key.
    #[cfg(feature = "https")]
    pub fn client_certificate_pem(
        mut self,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, ConfigError> {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| ConfigError::Tls("the client certificate PEM cannot be read".into()))?;
        if chain.is_empty() {
            return Err(ConfigError::Tls(
                "no certificate in the client certificate PEM".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| ConfigError::Tls("no private key in the client key PEM".into()))?;
        self.tls.client_auth = Some((chain, std::sync::Arc::new(key)));
        Ok(self)
    }

    /// The TCP connector. `https_inside`: it sits under the TLS connector, which handles
    /// `https` URIs itself; otherwise it refuses `https` URIs, so a target that asks for
    /// TLS is never sent the token in clear text.
    fn http_connector(&self, https_inside: bool) -> HttpConnector {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.enforce_http(!https_inside);
        http
    }

    #[cfg(feature = "https")]
    fn tls_config(&self) -> Result<rustls::ClientConfig, ConfigError> {
        use std::sync::Arc;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
        let builder = {
            let mut roots = rustls::RootCertStore::empty();
            #[cfg(feature = "webpki-roots")]
            if !self.tls.no_webpki_roots {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            #[cfg(feature = "native-roots")]
            let mut native_errors = Vec::new();
            #[cfg(feature = "native-roots")]
            if self.tls.native_roots {
                let found = rustls_native_certs::load_native_certs();
                // A platform store often holds a few certificates rustls cannot use; the
                // others are enough.
                let _ = roots.add_parsable_certificates(found.certs);
                native_errors = found.errors;
            }
            for cert in &self.tls.extra_roots {
                roots.add(cert.clone()).map_err(|e| {
                    ConfigError::Tls(format!("a root certificate was refused: {e}"))
                })?;
            }
            if roots.is_empty() {
                // Every https target would fail its handshake with `502`.
                #[cfg(feature = "native-roots")]
                if self.tls.native_roots {
                    let why = native_errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default();
                    return Err(ConfigError::Tls(format!(
                        "no root certificate could be loaded from the platform{why}, and no other root is trusted"
                    )));
                }
                if self.tls.no_webpki_roots {
                    return Err(ConfigError::Tls(
                        "no root certificate is trusted: the webpki roots are turned off and no other root was given".into(),
                    ));
                }
                // Not asked for any roots (the `https` feature without `webpki-roots`):
                // plain http targets work, https ones cannot, which is worth saying once.
                tracing::warn!(
                    target: "tower_identity_proxy",
                    "no root certificate is trusted: https targets will fail with 502 (enable the `webpki-roots` feature, `native_roots(true)`, or add a root)"
                );
            }
            builder.with_root_certificates(roots)
        };
        match &self.tls.client_auth {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| ConfigError::Tls(format!("the client certificate was refused: {e}"))),
            None => Ok(builder.with_no_client_auth()),
        }
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Tls`] if the TLS configuration cannot be built: a client certificate
    /// that does not fit its key, or no root certificate to verify https targets with after
    /// [`without_webpki_roots`](Self::without_webpki_roots) or `native_roots(true)` (with
    /// the `https` feature alone, which trusts no root, the client builds, logs a warning,
    /// and serves plain http targets).
    pub fn build(self) -> Result<ProxyClient, ConfigError> {
        #[cfg(feature = "https")]
        let (tls, tls_h1) = {
            let tls = self.tls_config()?;
            let mut h1_tls = tls.clone();
            h1_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let tls = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only()
                .enable_http1()
                .enable_http2()
                .wrap_connector(self.http_connector(true));
            // ALPN set by hand: the builder refuses a configuration that has it.
            let tls_h1 = hyper_rustls::HttpsConnector::from((
                self.http_connector(true),
                std::sync::Arc::new(h1_tls),
            ));
            (tls, tls_h1)
        };
        let transport = pool::build(pool::Settings {
            idle_timeout: self.pool_idle_timeout,
            max_idle: self.pool_max_idle_per_host,
            h2c: self.h2c,
            keep_alive: self.h2_keep_alive,
            http: self.http_connector(false),
            #[cfg(feature = "https")]
            tls,
            #[cfg(feature = "https")]
            tls_h1,
        });
        Ok(ProxyClient {
            transport,
            h2c: self.h2c,
        })
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("h2c", &self.h2c)
            .field("h2_keep_alive", &self.h2_keep_alive)
            .finish_non_exhaustive()
    }
}

impl ProxyClient {
    /// A `GET` without body through the default client (the JWKS fetch of the target-side
    /// verifier); redirects are not followed.
    pub(crate) async fn get(&self, uri: http::Uri) -> Result<Response<Received>, BoxError> {
        use http_body_util::{BodyExt, Empty};
        let body = Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let origin = Origin::of(&uri).ok_or("the URL is not absolute")?;
        let req = Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(body)?;
        Ok(self
            .transport
            .send(origin, req, Host::FromOrigin, Route::Auto)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the `https` feature, an https target is refused before any connection is
    /// made: the token never travels in clear text to a port that expects TLS.
    #[cfg(not(feature = "https"))]
    #[tokio::test]
    async fn https_targets_are_refused_without_tls() {
        use http_body_util::{BodyExt, Empty};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Target::parse(&format!("https://{addr}")).unwrap();
        for client in [
            ProxyClient::new().unwrap(),
            ProxyClient::builder()
                .http2_prior_knowledge(true)
                .build()
                .unwrap(),
        ] {
            for upgrade in [false, true] {
                let req = Request::get(format!("https://{addr}/"))
                    .header("authorization", "Bearer secret")
                    .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
                    .unwrap();
                let sent = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.send(&target, req, upgrade),
                )
                .await;
                assert!(matches!(sent, Ok(Err(_))), "not refused at once");
            }
        }
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was made");
    }

    #[test]
    fn defaults() {
        let b = ProxyClient::builder();
        assert_eq!(b.pool_idle_timeout, Duration::from_millis(4500));
        assert_eq!(b.connect_timeout, Duration::from_secs(10));
        assert!(!b.h2c);
        assert_eq!(b.h2_keep_alive.interval, None);
        assert_eq!(b.h2_keep_alive.timeout, Duration::from_secs(20));
        assert!(!b.h2_keep_alive.while_idle);
    }

    /// A client told to trust nothing is a configuration error, not a client on which
    /// every https target fails with `502`.
    #[cfg(feature = "https")]
    #[test]
    fn a_client_that_trusts_no_root_is_refused() {
        let err = ProxyClient::builder()
            .without_webpki_roots()
            .build()
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Tls(m) if m.contains("no root certificate is trusted")),
            "{err}"
        );
        // With a root of its own it builds.
        let ca = rcgen::generate_simple_self_signed(["ca.test".to_owned()]).unwrap();
        let built = ProxyClient::builder()
            .without_webpki_roots()
            .add_root_certificates_pem(ca.cert.pem().as_bytes())
            .unwrap()
            .build();
        assert!(built.is_ok());
    }

    #[test]
    fn keep_alive_settings_are_bounded() {
        let b = ProxyClient::builder()
            .http2_keep_alive_interval(Duration::MAX)
            .http2_keep_alive_timeout(Duration::MAX)
            .http2_keep_alive_while_idle(true);
        assert_eq!(b.h2_keep_alive.interval, Some(MAX_KEEP_ALIVE));
        assert_eq!(b.h2_keep_alive.timeout, MAX_KEEP_ALIVE);
        assert!(b.h2_keep_alive.while_idle);
        // A client with them builds, and zero turns pings off.
        assert!(b.clone().build().is_ok());
        let b = b.http2_keep_alive_interval(Duration::ZERO);
        assert_eq!(b.h2_keep_alive.interval, None);
        let b = b.http2_keep_alive_interval(Duration::from_secs(30));
        assert_eq!(b.h2_keep_alive.interval, Some(Duration::from_secs(30)));
    }

    #[test]
    fn the_connect_timeout_is_the_one_given() {
        let b = ProxyClient::builder().connect_timeout(Duration::from_millis(250));
        assert_eq!(b.connect_timeout, Duration::from_millis(250));
    }

    #[cfg(feature = "native-roots")]
    #[test]
    fn native_roots_are_trusted_when_asked_for() {
        let b = ProxyClient::builder().native_roots(true);
        assert!(b.tls.native_roots);
        assert!(!b.native_roots(false).tls.native_roots);
    }

    /// The bound is a day, as documented: anything up to it is taken as given.
    #[test]
    fn timeouts_up_to_a_day_are_kept_longer_ones_are_a_day() {
        let day = Duration::from_secs(24 * 60 * 60);
        let half_day = day / 2;
        let b = ProxyClient::builder()
            .pool_idle_timeout(half_day)
            .http2_keep_alive_interval(half_day)
            .http2_keep_alive_timeout(half_day);
        assert_eq!(b.pool_idle_timeout, half_day);
        assert_eq!(b.h2_keep_alive.interval, Some(half_day));
        assert_eq!(b.h2_keep_alive.timeout, half_day);
        let b = b
            .pool_idle_timeout(Duration::MAX)
            .http2_keep_alive_interval(day * 2)
            .http2_keep_alive_timeout(day + Duration::from_secs(1));
        assert_eq!(b.pool_idle_timeout, day);
        assert_eq!(b.h2_keep_alive.interval, Some(day));
        assert_eq!(b.h2_keep_alive.timeout, day);
    }
}
