//! The proxy over real sockets: the layer, forwarding, identity and signing.
//!
//! One test binary (several modules) to keep link time down. Every test starts its own app
//! (the layer around an echoing inner service) and target on 127.0.0.1:0, and checks the
//! tokens the target receives with `jsonwebtoken` directly (see `common::decode_jwt`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod forwarding;
mod identity;
mod layer;
mod signing;

use tower_identity_proxy::{ProxyHandle, Target};
use tower_identity_proxy::{
    ProxyLayer,
    identity::Anonymous,
    jwt::{CachingSigner, KeySigner},
};

/// The default layer: RS512 with the fixture RSA key, anonymous callers.
fn layer() -> ProxyLayer<Anonymous, CachingSigner<KeySigner>> {
    ProxyLayer::new(KeySigner::rs512(common::rsa_keys()).unwrap())
}

/// The default layer, forwarding to `target`.
fn layer_to(target: &common::EchoTarget) -> ProxyLayer<Anonymous, CachingSigner<KeySigner>> {
    layer().handle(ProxyHandle::with_target(
        Target::parse(&target.url()).unwrap(),
    ))
}
