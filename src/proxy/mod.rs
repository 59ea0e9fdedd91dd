//! The request path: [`ProxyLayer`](crate::ProxyLayer) and its service
//! [`Proxy`](crate::Proxy), the [`ResponseFuture`] and [`ResponseBody`] they answer with,
//! the upgraded connections ([`Tunnels`]), and the validated values the layer's builder
//! takes ([`Prefix`], [`ForwardedProto`], [`Pseudonym`], [`PublicOrigin`],
//! [`TrustedProxies`]).
//!
//! A request under the prefix goes through the identity extractor, the signer and the
//! pooled client to the target; everything else reaches the inner service untouched.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_identity_proxy::{
//!     ProxyHandle,
//!     ProxyLayer,
//!     Target,
//!     jwt::{KeyPair, KeySigner},
//!     proxy::{ForwardedProto, Prefix, Tunnels},
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let handle = ProxyHandle::with_target(Target::parse("http://127.0.0.1:1991")?);
//! let tunnels = Tunnels::new();
//! let proxy = ProxyLayer::new(KeySigner::new(KeyPair::generate_ed25519()?))
//!     .prefix("/api/proxy".parse::<Prefix>()?)
//!     .forwarded_proto(ForwardedProto::Https)
//!     .upstream_timeout(Duration::from_secs(10))
//!     .handle(handle.clone())
//!     .tunnels(tunnels.clone());
//! let app = axum::Router::<()>::new().layer(proxy);
//! handle.disable(); // later, from anywhere
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! # Where the target is told the app is
//!
//! The target learns the app's origin from `X-Forwarded-Proto` and `X-Forwarded-Host`, and
//! a target that calls the app back (the Atoti document's `session` mode) sends the user's
//! token there. Each request's origin is worked out once, in this order:
//! 1. the scheme and host the client addressed: `Host` (HTTP/2 `:authority`), and the
//!    HTTP/2 `:scheme` when present, else the layer's
//!    [`forwarded_proto`](crate::ProxyLayer::forwarded_proto);
//! 2. when the request comes from a [trusted proxy](crate::ProxyLayer::trusted_proxies)
//!    (its peer address is in one of the configured networks), what that proxy forwarded,
//!    `Forwarded` (RFC 7239) or else `X-Forwarded-For`/`-Proto`/`-Host`: the hops are read
//!    from the nearest one back, the first hop that is not a trusted proxy is the client,
//!    and the scheme and host are the ones that client used; from any other peer these
//!    headers are ignored;
//! 3. with [public origins](crate::ProxyLayer::public_origin) set, the result must be one
//!    of them (same host, same port, same scheme when it is known): the target gets that
//!    origin's scheme and host, the token names it as `iss`, and a request that matches none
//!    is answered `421 Misdirected Request` with nothing forwarded.
//!
//! Without public origins the target gets the host the client sent, whatever it is: a
//! client can name any host, and a target that calls the app back at the forwarded origin
//! can be sent anywhere (see the [`ForwardedOrigin`](crate::verify::ForwardedOrigin)
//! caveat).
//!
//! ## Example
//!
//! ```
//! use std::net::SocketAddr;
//! use axum::extract::ConnectInfo;
//! use tower_identity_proxy::{
//!     ProxyLayer,
//!     jwt::{KeyPair, KeySigner},
//!     proxy::{PublicOrigin, TrustedProxies},
//! };
//!
//! let signer = KeySigner::new(KeyPair::generate_ed25519()?);
//! let proxy = ProxyLayer::new(signer)
//!     .public_origin(PublicOrigin::from_static("https://app.example.com"))
//!     .public_origin("https://app.example.org".parse()?)
//!     // The balancer in front, which terminates TLS: its forwarded headers count.
//!     .trusted_proxies(TrustedProxies::new().network("10.0.0.0/8".parse()?))
//!     .forwarded_for(|parts| {
//!         let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
//!         Some(peer.ip())
//!     });
//! # let _ = proxy;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod body;
pub(crate) mod deadline;
pub(crate) mod forward;
pub(crate) mod future;
pub(crate) mod handle;
pub(crate) mod layer;
pub(crate) mod service;
pub(crate) mod upgrade;

pub use crate::rules::{
    origin::{IpNet, PublicOrigin, TrustedProxies},
    settings::{ForwardedProto, Prefix, Pseudonym},
};
pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use upgrade::Tunnels;
