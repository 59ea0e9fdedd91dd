//! The token cache in `ProxyLayer::new`, through the real layer over sockets: one signature
//! for N concurrent requests of one identity, one per identity, never a token handed to
//! another caller. Signatures are counted by a signer wrapping the real one.

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::Router;
use bytes::Bytes;
use common::{EchoTarget, client, decode_jwt, send_on, serve, token_target, user_header};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower_identity_proxy::{
    Identity, IdentityExtractor, JwtSigner, KeyPair, KeySigner, ProxyLayer, SignError, Token,
};

/// Counts signatures; none finishes before every request of the batch has been through
/// the identity step (the gate), so concurrent cache misses are sure to overlap.
#[derive(Clone)]
struct Counting {
    inner: KeySigner,
    calls: Arc<AtomicUsize>,
    gate: watch::Receiver<bool>,
}

impl JwtSigner for Counting {
    async fn sign(&self, identity: &Identity) -> Result<Token, SignError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        self.inner.sign(identity).await
    }
}

/// Verifies with jsonwebtoken and the public key PEM, as the Atoti document's target does.
fn verify(keys: &KeyPair, token: &str) -> Value {
    decode_jwt(
        token,
        &keys.public_key_pem(),
        jsonwebtoken::Algorithm::RS512,
    )
    .unwrap()
}

/// Sends `users.len()` requests at once, each as its user (`None`: anonymous), and returns
/// the token each one's request carried to the target.
async fn concurrent(app: std::net::SocketAddr, users: &[Option<&str>]) -> Vec<String> {
    let client = client();
    let tasks: Vec<_> = users
        .iter()
        .map(|user| {
            let client = client.clone();
            let mut req = http::Request::get(format!("http://{app}/proxy/who"));
            if let Some(user) = user {
                req = req.header("x-test-user", *user);
            }
            let req = req.body(Full::<Bytes>::default()).unwrap();
            tokio::spawn(async move { send_on(&client, req).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        tokens.push(reply.text());
    }
    tokens
}

/// The app; its signatures wait until `batch` requests have had their identity extracted
/// (the first concurrent batch of the test), then run freely.
async fn setup(
    cached: bool,
    batch: usize,
) -> (std::net::SocketAddr, KeyPair, Arc<AtomicUsize>, EchoTarget) {
    let keys = KeyPair::generate_rsa(2048).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (open, gate) = watch::channel(false);
    let signer = Counting {
        inner: KeySigner::rs512(keys.clone()).unwrap(),
        calls: Arc::clone(&calls),
        gate,
    };
    let target = token_target().await;
    let open = Arc::new(open);
    let arrived = Arc::new(AtomicUsize::new(0));
    let counted = move |parts: &http::request::Parts| {
        let extracted = user_header(parts);
        let (open, arrived) = (Arc::clone(&open), Arc::clone(&arrived));
        async move {
            let identity = extracted.await;
            if arrived.fetch_add(1, Ordering::SeqCst) + 1 == batch {
                open.send_replace(true);
            }
            identity
        }
    };
    let identity = counted.or_anonymous();
    let app = if cached {
        let proxy = ProxyLayer::new(signer).identity(identity);
        proxy.handle().set_target(Some(&target.url())).unwrap();
        serve(Router::new().layer(proxy)).await.detach()
    } else {
        let proxy = ProxyLayer::uncached(signer).identity(identity);
        proxy.handle().set_target(Some(&target.url())).unwrap();
        serve(Router::new().layer(proxy)).await.detach()
    };
    (app, keys, calls, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_signature_for_concurrent_requests_of_one_identity() {
    let (app, keys, calls, _target) = setup(true, 32).await;
    let tokens = concurrent(app, &[Some("Alice:ROLE_USER,ROLE_WONDERLAND"); 32]).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "32 concurrent misses, one signature"
    );
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    let claims = verify(&keys, &tokens[0]);
    assert_eq!(claims["sub"], "Alice");
    assert_eq!(
        claims["authorities"],
        json!(["ROLE_USER", "ROLE_WONDERLAND"])
    );

    // Later requests of the same identity reuse the token.
    let again = concurrent(app, &[Some("Alice:ROLE_WONDERLAND,ROLE_USER"); 4]).await;
    assert_eq!(again[0], tokens[0]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_signature_per_identity_and_never_another_callers_token() {
    let (app, keys, calls, _target) = setup(true, 48).await;
    let identities: [(Option<&str>, &str, Value); 6] = [
        (Some("Alice:ROLE_USER"), "Alice", json!(["ROLE_USER"])),
        (Some("Bob:ROLE_A"), "Bob", json!(["ROLE_A"])),
        // Same name, other roles: another identity.
        (
            Some("Bob:ROLE_A,ROLE_B"),
            "Bob",
            json!(["ROLE_A", "ROLE_B"]),
        ),
        // Same roles, other name.
        (Some("Carol:ROLE_A"), "Carol", json!(["ROLE_A"])),
        (Some("Dave:"), "Dave", json!([])),
        (None, "anonymousUser", json!(["ROLE_ANONYMOUS"])),
    ];
    // Eight requests per identity, interleaved, all at once.
    let users: Vec<Option<&str>> = (0..8)
        .flat_map(|_| identities.iter().map(|(u, _, _)| *u))
        .collect();
    let tokens = concurrent(app, &users).await;
    assert_eq!(calls.load(Ordering::SeqCst), identities.len());
    for (i, token) in tokens.iter().enumerate() {
        let (_, sub, roles) = &identities[i % identities.len()];
        let claims = verify(&keys, token);
        assert_eq!(
            &claims["sub"], sub,
            "request {i} got another caller's token"
        );
        assert_eq!(&claims["authorities"], roles, "request {i}");
    }
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), identities.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncached_layer_signs_every_request() {
    let (app, keys, calls, _target) = setup(false, 6).await;
    let tokens = concurrent(app, &[Some("Alice:ROLE_USER"); 6]).await;
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    for token in &tokens {
        assert_eq!(verify(&keys, token)["sub"], "Alice");
    }
}
