//! [`ProxyLayer`]: configuration of the proxy, applied to an inner service.

use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;

use crate::{
    client::ProxyClient,
    identity::{Anonymous, IdentityExtractor},
    jwt::signer::{CachingSigner, JwtSigner, KeySigner},
    proxy::{forward::Shared, handle::ProxyHandle, service::Proxy, upgrade::Tunnels},
    rules::{
        headers::{CookiePolicy, ResponsePolicy},
        origin::{PublicOrigin, TrustedProxies},
        rewrite::RewriteConfig,
        settings::{ForwardedProto, Prefix, Pseudonym},
    },
};

/// Takes over requests under a prefix (default `/proxy`) and forwards them to a run-time
/// switchable target with the caller's identity as a signed JWT.
///
/// The proxy is disabled (`501`) until a target is set on its [`ProxyHandle`]: create the
/// handle, keep a clone, and give it to [`handle`](Self::handle). Every service built from
/// one layer, and every clone of it, shares one client (its connection pools, kept per
/// worker thread), one token cache and one target.
///
/// The builder cannot fail: values that could be invalid are checked when they are made
/// ([`Prefix`], [`ForwardedProto`], [`Pseudonym`], [`Target`](crate::Target)). Plain names
/// set a value; `with_*` swaps a plug-in and changes a type parameter.
///
/// See the [crate docs](crate) for an example.
#[must_use]
pub struct ProxyLayer<I = Anonymous, J = CachingSigner<KeySigner>> {
    identity: I,
    signer: Arc<J>,
    handle: ProxyHandle,
    client: Option<ProxyClient>,
    rewrite: RewriteConfig,
    timeout: Duration,
    body_timeout: Option<Duration>,
    upgrades: bool,
    tunnel_idle_timeout: Option<Duration>,
    tunnels: Tunnels,
}

impl<S: JwtSigner> ProxyLayer<Anonymous, CachingSigner<S>> {
    /// A disabled proxy under `/proxy` whose tokens `signer` signs, through a token cache
    /// ([`CachingSigner`]); every caller is anonymous until
    /// [`with_identity`](Self::with_identity) says otherwise.
    pub fn new(signer: S) -> Self {
        ProxyLayer::uncached(CachingSigner::new(signer))
    }
}

impl<J: JwtSigner> ProxyLayer<Anonymous, J> {
    /// Like [`new`](ProxyLayer::new) but signs every token afresh (or caches as `signer`
    /// itself does).
    pub fn uncached(signer: J) -> Self {
        Self {
            identity: Anonymous::new(),
            signer: Arc::new(signer),
            handle: ProxyHandle::new(),
            client: default_client(),
            rewrite: RewriteConfig::default(),
            timeout: Duration::from_secs(30),
            body_timeout: Some(Duration::from_secs(60)),
            upgrades: true,
            tunnel_idle_timeout: Some(Duration::from_secs(60)),
            tunnels: Tunnels::new(),
        }
    }
}

impl<I, J> ProxyLayer<I, J> {
    /// Sets who the caller is. Default is [`Anonymous`]: everyone is `anonymousUser`.
    pub fn with_identity<I2: IdentityExtractor>(self, identity: I2) -> ProxyLayer<I2, J> {
        ProxyLayer {
            identity,
            signer: self.signer,
            handle: self.handle,
            client: self.client,
            rewrite: self.rewrite,
            timeout: self.timeout,
            body_timeout: self.body_timeout,
            upgrades: self.upgrades,
            tunnel_idle_timeout: self.tunnel_idle_timeout,
            tunnels: self.tunnels,
        }
    }

    /// Sets the path prefix taken over. Default is `/proxy`. Requests whose path is exactly
    /// the prefix or starts with `prefix/` are proxied; the prefix is removed before the
    /// target's base path is added. See [`Prefix`] for what a prefix may hold.
    ///
    /// ```
    /// use tower_identity_proxy::{ProxyLayer, jwt::{KeyPair, KeySigner}, proxy::Prefix};
    ///
    /// let proxy = ProxyLayer::new(KeySigner::new(KeyPair::generate_ed25519()?))
    ///     .prefix("/api/proxy".parse::<Prefix>()?);
    /// # let _ = proxy;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prefix(mut self, prefix: Prefix) -> Self {
        self.rewrite.set_prefix(prefix);
        self
    }

    /// Uses `handle` to find the target: keep a clone of it to change the target at run time,
    /// or share it with other layers. Default is a handle of the layer's own with no target,
    /// which nothing else can reach: the proxy then stays disabled.
    ///
    /// ```
    /// use tower_identity_proxy::{ProxyHandle, ProxyLayer, jwt::{KeyPair, KeySigner}};
    ///
    /// let handle = ProxyHandle::new();
    /// let proxy = ProxyLayer::new(KeySigner::new(KeyPair::generate_ed25519()?))
    ///     .handle(handle.clone());
    /// handle.set_target(Some("http://127.0.0.1:1991"))?;
    /// # let _ = proxy;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle(mut self, handle: ProxyHandle) -> Self {
        self.handle = handle;
        self
    }

    /// How long the target may take to send its response headers before the client gets
    /// `504`. Default is 30 seconds.
    ///
    /// It counts from when the request is sent or, while its body is still being sent, from
    /// the last bytes of the body that moved: an upload that keeps moving is never cut,
    /// however long it takes, and one that makes no progress for this long gets `504` when
    /// the target stopped reading it, or `408` (an HTTP/1.x connection is then closed) when
    /// the client stopped sending it, as nginx's `client_body_timeout`.
    pub fn upstream_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the target's response body may stay silent (no bytes between two reads)
    /// before the response is aborted: the client sees it cut off (connection closed before
    /// the announced length, no last chunk, or an HTTP/2 stream reset), never a clean short
    /// body — except an HTTP/1.0 client receiving a body of unknown length, which is
    /// delimited by the close itself. Default is 60 seconds, as nginx's
    /// `proxy_read_timeout`; `None` waits forever (long polls that send nothing for longer).
    pub fn upstream_body_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.body_timeout = timeout.into();
        self
    }

    /// The `X-Forwarded-Proto` sent to the target: the scheme clients use to reach the app.
    /// Default is [`ForwardedProto::Http`]; set [`ForwardedProto::Https`] when the app is
    /// served over TLS (by itself or behind a TLS terminator).
    ///
    /// It is the fallback: the scheme of the [public origin](Self::public_origin) a request
    /// came through, else the one a [trusted proxy](Self::trusted_proxies) reports, else the
    /// request's HTTP/2 `:scheme`, is sent instead.
    pub fn forwarded_proto(mut self, proto: ForwardedProto) -> Self {
        self.rewrite.set_forwarded_proto(proto);
        self
    }

    /// Sends the target `X-Forwarded-For` with the client's address, as `client` finds it
    /// in each request's head; a request where it returns `None` carries none. Default:
    /// no `X-Forwarded-For` is sent.
    ///
    /// The client's own `X-Forwarded-For`, `Forwarded` and `X-Real-IP` never reach the
    /// target, so the header holds exactly one address, the one `client` returns. Where the
    /// address comes from is the server's to say: axum puts the peer's address in the
    /// [`ConnectInfo`] extension when the app is served with
    /// `into_make_service_with_connect_info::<SocketAddr>()`. Behind a load balancer you
    /// trust, `client` may read the address it reports instead (e.g. the last entry of its
    /// `X-Forwarded-For`); never trust what the client itself sends.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::extract::ConnectInfo;
    /// use tower_identity_proxy::{ProxyLayer, jwt::{KeyPair, KeySigner}};
    ///
    /// let signer = KeySigner::new(KeyPair::generate_ed25519()?);
    /// let proxy = ProxyLayer::new(signer).forwarded_for(|parts| {
    ///     let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
    ///     Some(peer.ip())
    /// });
    /// let app = axum::Router::<()>::new().layer(proxy);
    /// // axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
    /// # let _ = app;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// [`ConnectInfo`]: https://docs.rs/axum/latest/axum/extract/struct.ConnectInfo.html
    pub fn forwarded_for(
        mut self,
        client: impl Fn(&http::request::Parts) -> Option<std::net::IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.rewrite.set_forwarded_for(client);
        self
    }

    /// Which cookies cross the proxy. Default: none are forwarded (see [`CookiePolicy`]).
    ///
    /// # Security
    ///
    /// The target is another server: forwarding the app's session cookie would hand it the
    /// user's session. Declare the app's own cookies with [`CookiePolicy::protect`].
    pub fn cookies(mut self, policy: CookiePolicy) -> Self {
        self.rewrite.set_cookies(policy);
        self
    }

    /// Which of the target's response headers with an effect on the app's whole origin
    /// (`Clear-Site-Data`, `Alt-Svc`, `Strict-Transport-Security`, `Service-Worker-Allowed`
    /// beyond the prefix...) reach the client. Default: none (see [`ResponsePolicy`]).
    pub fn responses(mut self, policy: ResponsePolicy) -> Self {
        self.rewrite.set_responses(policy);
        self
    }

    /// Adds an origin under which clients reach the app, e.g. `https://app.example.com`;
    /// call it once per origin. Default: none.
    ///
    /// With public origins set, a request under the prefix must have come through one of
    /// them: its `Host` (or the host a [trusted proxy](Self::trusted_proxies) forwarded)
    /// names the origin's host and port, and its scheme, when known (a trusted proxy's, or
    /// the HTTP/2 `:scheme`), is the origin's. The target then gets that origin's scheme and
    /// host in `X-Forwarded-Proto` and `X-Forwarded-Host`, and the token names it as `iss`
    /// (instead of [`TokenPolicy::issuer`](crate::jwt::TokenPolicy::issuer)), so a target can
    /// check that the origin it would call back is the one the token vouches for (see
    /// [`ForwardedOrigin`](crate::verify::ForwardedOrigin)). A request that matches none is
    /// answered `421 Misdirected Request` and nothing is forwarded.
    ///
    /// # Security
    ///
    /// Without public origins, `X-Forwarded-Host` is whatever `Host` the client sent, and
    /// `X-Forwarded-Proto` the [configured](Self::forwarded_proto) scheme: any client can
    /// name any host, and a target that calls the app back at the forwarded origin, with
    /// the user's token, can be sent to a server of the client's choosing. Set the app's
    /// origins whenever a target may call it back.
    ///
    /// See the [`proxy` module](crate::proxy#where-the-target-is-told-the-app-is) for an
    /// example.
    pub fn public_origin(mut self, origin: PublicOrigin) -> Self {
        self.rewrite.add_public_origin(origin);
        self
    }

    /// The proxies in front of the app (load balancers, TLS terminators) whose forwarded
    /// headers count. Default: none, every client's `Forwarded` and `X-Forwarded-*` are
    /// ignored.
    ///
    /// A request whose peer address (as [`forwarded_for`](Self::forwarded_for) finds it) is
    /// in one of these networks may report the client's address, scheme and host, in
    /// `Forwarded` (RFC 7239) or else `X-Forwarded-For`, `-Proto` and `-Host`. The hops are
    /// read from the nearest one back: the first address that is not a trusted proxy is the
    /// client (the target's `X-Forwarded-For`), and the scheme and host it used are the
    /// ones the target is told (checked against the [public origins](Self::public_origin)
    /// when set). What a client adds to the left of these lists is never reached. A
    /// malformed `Forwarded`, or a forwarded scheme or host that is not valid, from a
    /// trusted proxy is `400`.
    ///
    /// # Panics
    ///
    /// When the layer is applied to a service with trusted proxies but without
    /// [`forwarded_for`](Self::forwarded_for): the peer's address is how a trusted proxy is
    /// recognised.
    ///
    /// See the [`proxy` module](crate::proxy#where-the-target-is-told-the-app-is) for an
    /// example.
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.rewrite.set_trusted_proxies(proxies);
        self
    }

    /// The `Via` pseudonym of this proxy, also used to detect loops. Default is `tip-`
    /// followed by random characters, new for each layer.
    pub fn via_pseudonym(mut self, pseudonym: Pseudonym) -> Self {
        self.rewrite.set_pseudonym(pseudonym);
        self
    }

    /// Whether `Upgrade` requests (WebSocket) are tunnelled once the target answers `101`
    /// with the same protocol. Default is on; `h2c` upgrades are never tunnelled.
    ///
    /// Upgrades exist in HTTP/1.1 only: the request to the target always goes over
    /// HTTP/1.1 (`ws`/`wss` follow the target's `http`/`https`), and the app's server must
    /// hand upgrades over (`axum::serve` does; with hyper-util use
    /// `serve_connection_with_upgrades`). WebSockets over inbound HTTP/2 (extended
    /// `CONNECT`, RFC 8441) are not proxied: such requests get `405`, as every `CONNECT`.
    pub fn upgrades(mut self, on: bool) -> Self {
        self.upgrades = on;
        self
    }

    /// How long an upgraded connection (a WebSocket tunnel) may stay silent, no byte moving
    /// in either direction, before the proxy closes both the caller's and the target's
    /// connection. Every byte either way restarts the wait, WebSocket pings included.
    ///
    /// Default is 60 seconds, as nginx's `proxy_read_timeout` applies to its WebSocket
    /// tunnels: a tunnel whose peers vanished without a TCP close (a laptop put to sleep, a
    /// NAT that forgot the flow) would otherwise hold two sockets and a task forever.
    /// Applications that keep a quiet WebSocket open ping more often than that (Socket.IO
    /// pings every 25 seconds, SignalR every 15). `None` lets a tunnel
    /// live as long as both peers keep their connections open. The proxy closes the TCP
    /// connections without a WebSocket close frame: it does not parse the tunnelled
    /// protocol.
    pub fn tunnel_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.tunnel_idle_timeout = timeout.into();
        self
    }

    /// Counts the upgraded connections (WebSocket tunnels) this layer opens in `tunnels`:
    /// how many are open, a wait for them to end, and a way to close them, for a graceful
    /// shutdown (a server's own graceful shutdown does not see a connection once it is
    /// upgraded). Keep a clone of `tunnels`; give each server thread its own set to wait for
    /// its own. Default is a set of the layer's own, which nothing else can reach. See
    /// [`Tunnels`] for an example.
    pub fn tunnels(mut self, tunnels: Tunnels) -> Self {
        self.tunnels = tunnels;
        self
    }

    /// The client used to reach the target. Default is [`ProxyClient::new`].
    pub fn client(mut self, client: ProxyClient) -> Self {
        self.client = Some(client);
        self
    }

    fn shared(&self) -> Arc<Shared<I, J>>
    where
        I: Clone,
    {
        assert!(
            !self.rewrite.trusts_without_peer(),
            "ProxyLayer::trusted_proxies needs ProxyLayer::forwarded_for: a trusted proxy is \
             recognised by the peer address it finds"
        );
        let client = self.client.clone();
        Arc::new(Shared {
            identity: self.identity.clone(),
            signer: Arc::clone(&self.signer),
            handle: self.handle.clone(),
            client,
            rewrite: Arc::new(self.rewrite.clone()),
            timeout: self.timeout,
            body_timeout: self.body_timeout,
            upgrades: self.upgrades,
            tunnel_idle_timeout: self.tunnel_idle_timeout,
            tunnels: self.tunnels.clone(),
        })
    }
}

/// The default client of a layer (one client per layer, shared by every service built from
/// it).
/// Its TLS configuration comes from compiled-in roots; should it ever fail to build, proxied
/// requests get `502` and the error is logged.
fn default_client() -> Option<ProxyClient> {
    match ProxyClient::new() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(target: "tower_identity_proxy", error = %e, "default client not built");
            None
        }
    }
}

impl<I: Clone, J> Clone for ProxyLayer<I, J> {
    fn clone(&self) -> Self {
        Self {
            identity: self.identity.clone(),
            signer: Arc::clone(&self.signer),
            handle: self.handle.clone(),
            client: self.client.clone(),
            rewrite: self.rewrite.clone(),
            timeout: self.timeout,
            body_timeout: self.body_timeout,
            upgrades: self.upgrades,
            tunnel_idle_timeout: self.tunnel_idle_timeout,
            tunnels: self.tunnels.clone(),
        }
    }
}

impl<I: fmt::Debug, J> fmt::Debug for ProxyLayer<I, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyLayer")
            .field("prefix", &self.rewrite.prefix())
            .field("public_origins", &self.rewrite.public_origins())
            .field("identity", &self.identity)
            .field("handle", &self.handle)
            .field("timeout", &self.timeout)
            .field("body_timeout", &self.body_timeout)
            .field("tunnel_idle_timeout", &self.tunnel_idle_timeout)
            .field("tunnels", &self.tunnels)
            .finish_non_exhaustive()
    }
}

impl<S, I: Clone, J> Layer<S> for ProxyLayer<I, J> {
    type Service = Proxy<S, I, J>;

    fn layer(&self, inner: S) -> Self::Service {
        Proxy::from_shared(inner, self.shared())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::KeyPair;

    fn signer() -> KeySigner {
        KeySigner::new(KeyPair::generate_ed25519().unwrap())
    }

    #[test]
    #[should_panic(expected = "trusted_proxies needs ProxyLayer::forwarded_for")]
    fn trusted_proxies_without_a_peer_address_is_a_programmers_error() {
        let layer = ProxyLayer::new(signer())
            .trusted_proxies(TrustedProxies::new().network("10.0.0.0/8".parse().unwrap()));
        let _ = Layer::layer(&layer, ());
    }

    #[test]
    fn trusted_proxies_with_a_peer_address_build() {
        let layer = ProxyLayer::new(signer())
            .trusted_proxies(TrustedProxies::new().network("10.0.0.0/8".parse().unwrap()))
            .forwarded_for(|_| None);
        let _ = Layer::layer(&layer, ());
    }
}
