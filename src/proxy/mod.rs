//! The request path: [`ProxyLayer`](crate::ProxyLayer) and its service
//! [`Proxy`](crate::Proxy), the [`ResponseFuture`] and [`ResponseBody`] they answer with,
//! the upgraded connections ([`Tunnels`]), and the validated values the layer's builder
//! takes ([`Prefix`], [`ForwardedProto`], [`Pseudonym`]).
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

pub(crate) mod body;
pub(crate) mod deadline;
pub(crate) mod forward;
pub(crate) mod future;
pub(crate) mod handle;
pub(crate) mod layer;
pub(crate) mod service;
pub(crate) mod upgrade;

pub use crate::rules::settings::{ForwardedProto, Prefix, Pseudonym};
pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use upgrade::Tunnels;
