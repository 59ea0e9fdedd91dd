//! Signing cost per request: a fresh signature (`KeySigner::sign_blocking`) versus a
//! token cache hit (`CachingSigner`, what `ProxyLayer::new` uses), per algorithm.
//!
//! Run: `cargo bench --bench sign`. The cached figure is the whole per-request cost of the
//! identity token on the proxy's hot path (map lookup, freshness check, clone of the ready
//! `Authorization` header value).

#![allow(clippy::expect_used)] // a benchmark that cannot set up should stop loudly

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use tower_identity_proxy::{
    identity::Identity,
    jwt::{Algorithm, CachingSigner, Curve, JwtSigner, KeyPair, KeySigner},
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn signers() -> Vec<(&'static str, KeySigner)> {
    let rsa2048 = KeyPair::generate_rsa(2048).expect("RSA 2048 key");
    let rsa3072 = KeyPair::generate_rsa(3072).expect("RSA 3072 key");
    let p256 = KeyPair::generate_ec(Curve::P256).expect("P-256 key");
    let ed = KeyPair::generate_ed25519().expect("Ed25519 key");
    vec![
        (
            "RS512-2048",
            KeySigner::with_algorithm(rsa2048, Algorithm::RS512).expect("RS512"),
        ),
        (
            "RS512-3072",
            KeySigner::with_algorithm(rsa3072, Algorithm::RS512).expect("RS512"),
        ),
        (
            "ES256",
            KeySigner::with_algorithm(p256, Algorithm::ES256).expect("ES256"),
        ),
        (
            "EdDSA",
            KeySigner::with_algorithm(ed, Algorithm::EdDSA).expect("EdDSA"),
        ),
    ]
}

fn sign(c: &mut Criterion) {
    let rt = runtime();
    // The demo's `--unsecured` identity: every caller is this one.
    let identity = Identity::new(
        Identity::ANONYMOUS_USER,
        ["ROLE_ADMIN", "ROLE_ANONYMOUS", "ROLE_USER"],
    );
    for (name, signer) in signers() {
        let mut group = c.benchmark_group(format!("sign/{name}"));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(30);
        group.bench_function("cold", |b| {
            b.iter(|| black_box(signer.sign_blocking(black_box(&identity)).expect("signed")))
        });

        let cached = CachingSigner::new(signer.clone());
        rt.block_on(cached.sign(&identity))
            .expect("first signature");
        group.bench_function("cached", |b| {
            b.to_async(&rt).iter(|| async {
                black_box(cached.sign(black_box(&identity)).await.expect("cached"))
            })
        });
        group.finish();
    }

    // A cache holding many identities: the hit cost must not grow with the population.
    let signer = KeySigner::new(KeyPair::generate_ed25519().expect("Ed25519 key"));
    let cached = CachingSigner::new(signer);
    let users: Vec<Identity> = (0..5_000)
        .map(|i| Identity::new(format!("user{i}"), ["ROLE_USER", "ROLE_WONDERLAND"]))
        .collect();
    for u in &users {
        rt.block_on(cached.sign(u)).expect("signed");
    }
    let mut group = c.benchmark_group("sign/cache-5000-identities");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    let mut i = 0usize;
    group.bench_function("cached", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 7919) % users.len();
            let u = &users[i];
            let cached = &cached;
            async move { black_box(cached.sign(u).await.expect("cached")) }
        })
    });
    group.finish();

    // A cache full of fresh tokens (its default bound, 10 000) taking a flood of new
    // identities: each is a miss, so a signature, plus whatever making room costs.
    let signer = KeySigner::new(KeyPair::generate_ed25519().expect("Ed25519 key"));
    let full = CachingSigner::new(signer.clone());
    for i in 0..10_000 {
        let u = Identity::new(format!("user{i}"), ["ROLE_USER"]);
        rt.block_on(full.sign(&u)).expect("signed");
    }
    let mut group = c.benchmark_group("sign/cache-full-new-identity");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    group.bench_function("uncached", |b| {
        let u = Identity::new("newcomer", ["ROLE_USER"]);
        b.iter(|| black_box(signer.sign_blocking(black_box(&u)).expect("signed")))
    });
    let mut n = 0u64;
    group.bench_function("cache-miss", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let u = Identity::new(format!("flood{n}"), ["ROLE_USER"]);
            let full = &full;
            async move { black_box(full.sign(&u).await.expect("signed")) }
        })
    });
    group.finish();
}

criterion_group!(benches, sign);
criterion_main!(benches);
