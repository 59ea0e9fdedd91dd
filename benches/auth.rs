//! Authentication cost per request: a Basic user name and password recognised by the
//! verified-credential cache versus checked with Argon2id (the default parameters), and a
//! Bearer token (RS512, RSA-3072, as the demo signs) recognised by the verified-token cache
//! versus verified.
//!
//! Run: `cargo bench --bench auth`. Each figure is the whole extractor call on a request's
//! head (header parsing included).

#![allow(clippy::expect_used)] // a benchmark that cannot set up should stop loudly

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use http::request::Parts;
use tower_identity_proxy::{
    identity::{BasicAuth, BearerJwt, CredentialStore, Identity, IdentityExtractor},
    jwt::{JwtSigner, KeyPair, KeySigner},
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn head(authorization: &str) -> Parts {
    http::Request::get("/proxy/x")
        .header(http::header::AUTHORIZATION, authorization)
        .body(())
        .expect("request")
        .into_parts()
        .0
}

fn basic(c: &mut Criterion) {
    use base64::Engine as _;
    let rt = runtime();
    let users = CredentialStore::new();
    users
        .insert("Alice", "abcdef123456", ["ROLE_USER", "ROLE_WONDERLAND"])
        .expect("user");
    let parts = head(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("Alice:abcdef123456")
    ));
    let mut group = c.benchmark_group("basic");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let cached = BasicAuth::new(users.clone());
    group.bench_function("cached", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cached.extract(black_box(&parts)).await.expect("known")) });
    });
    let uncached = BasicAuth::new(users).credential_cache(Duration::ZERO, 0);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    group.bench_function("argon2id", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(uncached.extract(black_box(&parts)).await.expect("known"))
        });
    });
    group.finish();
}

fn bearer(c: &mut Criterion) {
    let rt = runtime();
    let keys = KeyPair::generate_rsa(3072).expect("RSA 3072 key");
    let token = rt
        .block_on(
            KeySigner::rs512(keys.clone())
                .expect("RS512")
                .sign(&Identity::new("Alice", ["ROLE_USER", "ROLE_WONDERLAND"])),
        )
        .expect("token");
    let parts = head(token.authorization().to_str().expect("ASCII"));
    let mut group = c.benchmark_group("bearer");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, extractor) in [
        ("cached", BearerJwt::new(keys.verifier())),
        ("verified", BearerJwt::new(keys.verifier()).token_cache(0)),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                black_box(extractor.extract(black_box(&parts)).await.expect("valid"))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, basic, bearer);
criterion_main!(benches);
