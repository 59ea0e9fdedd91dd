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
use common::{EchoTarget, client, decode_jwt, send_on, serve, token_target, user_header, within};
use http::request::Parts;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower_identity_proxy::{ProxyHandle, Target};
use tower_identity_proxy::{
    ProxyLayer,
    identity::{Identity, IdentityExtractor},
    jwt::{JwtSigner, KeyPair, KeySigner, SignError, Token},
};

/// Counts signatures; each one waits until the test opens the gate, which it does once
/// every request it sent has been through the identity extractor (see [`concurrent`]), so
/// concurrent cache misses overlap by construction, not by timing.
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
        gate.wait_for(|open| *open).await.unwrap();
        self.inner.sign(identity).await
    }
}

/// The app under test: its address, how many requests its identity extractor has seen, and
/// the gate its signatures wait for.
struct App {
    addr: std::net::SocketAddr,
    extracted: watch::Receiver<usize>,
    gate: watch::Sender<bool>,
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

/// Sends `users.len()` requests at once, each as its user (`None`: anonymous), opens the
/// signers' gate once all of them have been through the identity extractor, and returns
/// the token each one's request carried to the target.
///
/// The layer looks the cache up in the same poll in which the extractor answers, so once
/// the count is reached every request has done so (bar at most those a runtime worker is
/// polling at that instant), and each miss waits for a signature that cannot finish before
/// the gate opens: without single-flight, every one of them would sign.
async fn concurrent(app: &App, users: &[Option<&str>]) -> Vec<String> {
    let client = client();
    let arrived = *app.extracted.borrow() + users.len();
    let addr = app.addr;
    let tasks: Vec<_> = users
        .iter()
        .map(|user| {
            let client = client.clone();
            let mut req = http::Request::get(format!("http://{addr}/proxy/who"));
            if let Some(user) = user {
                req = req.header("x-test-user", *user);
            }
            let req = req.body(Full::<Bytes>::default()).unwrap();
            tokio::spawn(async move { send_on(&client, req).await })
        })
        .collect();
    let mut extracted = app.extracted.clone();
    within(
        "every request reaches the identity extractor",
        extracted.wait_for(|n| *n >= arrived),
    )
    .await
    .unwrap();
    app.gate.send_replace(true);
    let mut tokens = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        tokens.push(reply.text());
    }
    tokens
}

async fn setup(cached: bool) -> (App, KeyPair, Arc<AtomicUsize>, EchoTarget) {
    let keys = KeyPair::generate_rsa(2048).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (gate, gate_rx) = watch::channel(false);
    let signer = Counting {
        inner: KeySigner::rs512(keys.clone()).unwrap(),
        calls: Arc::clone(&calls),
        gate: gate_rx,
    };
    let target = token_target().await;
    let (counter, extracted) = watch::channel(0_usize);
    let counter = Arc::new(counter);
    let counted = move |parts: &Parts| {
        let identity = user_header(parts);
        let counter = Arc::clone(&counter);
        async move {
            let identity = identity.await;
            counter.send_modify(|n| *n += 1);
            identity
        }
    };
    let identity = counted.or_anonymous();
    let addr =
        if cached {
            let proxy =
                ProxyLayer::new(signer)
                    .with_identity(identity)
                    .handle(ProxyHandle::with_target(
                        Target::parse(&target.url()).unwrap(),
                    ));
            serve(Router::new().layer(proxy)).await.detach()
        } else {
            let proxy = ProxyLayer::uncached(signer).with_identity(identity).handle(
                ProxyHandle::with_target(Target::parse(&target.url()).unwrap()),
            );
            serve(Router::new().layer(proxy)).await.detach()
        };
    let app = App {
        addr,
        extracted,
        gate,
    };
    (app, keys, calls, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_signature_for_concurrent_requests_of_one_identity() {
    let (app, keys, calls, _target) = setup(true).await;
    let tokens = concurrent(&app, &[Some("Alice:ROLE_USER,ROLE_WONDERLAND"); 32]).await;
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
    let again = concurrent(&app, &[Some("Alice:ROLE_WONDERLAND,ROLE_USER"); 4]).await;
    assert_eq!(again[0], tokens[0]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_signature_per_identity_and_never_another_callers_token() {
    let (app, keys, calls, _target) = setup(true).await;
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
    let tokens = concurrent(&app, &users).await;
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
    let (app, keys, calls, _target) = setup(false).await;
    let tokens = concurrent(&app, &[Some("Alice:ROLE_USER"); 6]).await;
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    for token in &tokens {
        assert_eq!(verify(&keys, token)["sub"], "Alice");
    }
}
