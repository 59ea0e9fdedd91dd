//! Key rotation at run time, over real sockets: no request fails while keys rotate under
//! load, every token verifies (jsonwebtoken against the JWKS fetched over HTTP), the app's
//! `BearerJwt` keeps accepting tokens of previous keys until they are retired, and a
//! revoked key disappears along with the tokens cached for it.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::Router;
use bytes::Bytes;
use common::{
    Attempt, EchoTarget, client, decode_with_jwks, despite_stalls, fetch_jwks, get_with, kid,
    send_on, serve, stalled_or_broken, token_target, user_header, within,
};
use http_body_util::Full;
use tower_identity_proxy::{ProxyHandle, Target};
use tower_identity_proxy::{
    ProxyLayer,
    identity::{BearerJwt, IdentityExtractor},
    jwt::{JwtSigner, KeyPair, KeySet, KeySigner, TokenPolicy},
};

const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The app: the proxy signing with the key set, identity from the app's own Bearer tokens
/// (verified against the whole set), else the test header, else anonymous.
async fn app<J: JwtSigner>(
    keys: &KeySet,
    layer: ProxyLayer<tower_identity_proxy::identity::Anonymous, J>,
) -> (SocketAddr, EchoTarget) {
    let target = token_target().await;
    let proxy = layer
        .with_identity(
            BearerJwt::new(keys.verifier())
                .or(user_header)
                .or_anonymous(),
        )
        .handle(ProxyHandle::with_target(
            Target::parse(&target.url()).unwrap(),
        ));
    let app = Router::new()
        .route_service(JWKS_PATH, keys.jwks())
        .layer(proxy);
    (serve(app).await.detach(), target)
}

/// Waits until the target has seen `at_least` requests (a liveness guard, not a timing
/// assertion: it fails only if requests stop arriving altogether).
async fn wait_for_hits(recorded: &EchoTarget, at_least: usize) {
    let wait = async {
        while recorded.count() < at_least {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    within("requests keep reaching the target", wait).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_concurrent_load_loses_no_request() {
    const CLIENTS: usize = 8;
    const ROTATIONS: usize = 5;
    const BETWEEN: usize = 24; // requests seen by the target between two rotations
    const MAX_PER_CLIENT: usize = 400;

    let keys = KeySet::new(KeySigner::rs512(KeyPair::generate_rsa(2048).unwrap()).unwrap())
        .rotation_delay(Duration::ZERO);
    let next_keys: Vec<KeyPair> = (0..ROTATIONS)
        .map(|_| KeyPair::generate_rsa(2048).unwrap())
        .collect();
    // Uncached: every request signs with the key active at that moment.
    let (app, recorded) = app(&keys, ProxyLayer::uncached(keys.signer())).await;
    let url = format!("http://{app}/proxy/load");

    // A token of the first key, presented back to the app during the rotations.
    let first = get_with(&url, &[("x-test-user", "Callback:ROLE_USER")]).await;
    assert_eq!(first.status, 200);
    let first_token = first.text();
    let first_kid = kid(&first_token);

    let done = Arc::new(AtomicBool::new(false));
    let client = client();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, done, url) = (client.clone(), Arc::clone(&done), url.clone());
        let bearer = format!("Bearer {first_token}");
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..MAX_PER_CLIENT {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let req = http::Request::get(&url);
                // Client 0 calls back with the first key's token; the others by name.
                let req = if c == 0 {
                    req.header("authorization", &bearer)
                } else {
                    req.header("x-test-user", format!("user{c}:ROLE_USER"))
                };
                let reply = send_on(&client, req.body(Full::<Bytes>::default()).unwrap()).await;
                seen.push((reply.status, reply.text()));
            }
            (c, seen)
        }));
    }

    let mut rotated = vec![first_kid.clone()];
    for next in next_keys {
        let before = recorded.count();
        wait_for_hits(&recorded, before + BETWEEN).await;
        rotated.push(keys.rotate(next).unwrap().into_kid());
    }
    let before = recorded.count();
    wait_for_hits(&recorded, before + BETWEEN).await;
    done.store(true, Ordering::SeqCst);

    let (_, jwks) = fetch_jwks(&format!("http://{app}{JWKS_PATH}")).await;
    assert_eq!(jwks.keys.len(), ROTATIONS + 1, "no key retired yet");
    let mut kids_used = std::collections::BTreeSet::new();
    let mut total = 0;
    for task in tasks {
        let (c, seen) = task.await.unwrap();
        assert!(!seen.is_empty());
        for (status, token) in seen {
            total += 1;
            assert_eq!(status, 200, "client {c}: {token}");
            let claims = decode_with_jwks(&token, &jwks)
                .unwrap_or_else(|e| panic!("client {c}: token does not verify: {e}"));
            let expected = if c == 0 {
                "Callback".to_owned()
            } else {
                format!("user{c}")
            };
            assert_eq!(claims["sub"], expected.as_str());
            kids_used.insert(kid(&token));
        }
    }
    assert_eq!(
        total + 1,
        recorded.count(),
        "every request reached the target"
    );
    // Every key signed: signing followed each rotation while requests kept flowing.
    let rotated: std::collections::BTreeSet<String> = rotated.into_iter().collect();
    assert_eq!(kids_used, rotated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_with_the_token_cache_keeps_cached_tokens_valid() {
    let keys = KeySet::new(KeySigner::rs512(KeyPair::generate_rsa(2048).unwrap()).unwrap())
        .rotation_delay(Duration::ZERO);
    let (app, _target) = app(&keys, ProxyLayer::new(keys.signer())).await;
    let url = format!("http://{app}/proxy/x");
    let alice = get_with(&url, &[("x-test-user", "Alice:ROLE_USER")])
        .await
        .text();
    let old_kid = keys.active_kid();
    let new_kid = keys
        .rotate(KeyPair::generate_rsa(2048).unwrap())
        .unwrap()
        .into_kid();

    // Documented: a cached token of the previous key is still handed out...
    let again = get_with(&url, &[("x-test-user", "Alice:ROLE_USER")])
        .await
        .text();
    assert_eq!(again, alice);
    assert_eq!(kid(&again), old_kid);
    // ...and still verifies, since the previous key is still published.
    let (_, jwks) = fetch_jwks(&format!("http://{app}{JWKS_PATH}")).await;
    decode_with_jwks(&again, &jwks).unwrap();
    // A new identity gets a token of the new key.
    let bob = get_with(&url, &[("x-test-user", "Bob:ROLE_USER")])
        .await
        .text();
    assert_eq!(kid(&bob), new_kid);
    decode_with_jwks(&bob, &jwks).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_keys_retire_once_their_tokens_expired() {
    despite_stalls(Duration::from_secs(2), previous_key_retires).await;
}

/// One run of [`previous_keys_retire_once_their_tokens_expired`] with tokens of `lifetime`:
/// the previous key must still be published and accepted until then (a stall of the
/// machine may let it retire first: [`stalled_or_broken`] tells which it was).
async fn previous_key_retires(lifetime: Duration) -> Attempt {
    let first = KeyPair::generate_rsa(2048).unwrap();
    let signer = KeySigner::rs512(first.clone())
        .unwrap()
        .policy(TokenPolicy::new().lifetime(lifetime));
    let keys = KeySet::new(signer)
        .rotation_delay(Duration::ZERO)
        .retirement_grace(Duration::ZERO);
    let (app, recorded) = app(&keys, ProxyLayer::uncached(keys.signer())).await;
    let url = format!("http://{app}/proxy/x");
    let jwks_url = format!("http://{app}{JWKS_PATH}");

    let old = get_with(&url, &[("x-test-user", "Alice:ROLE_USER")])
        .await
        .text();
    assert_eq!(kid(&old), first.kid());
    let next = KeyPair::generate_rsa(2048).unwrap();
    // The previous key retires no earlier than `lifetime` after this.
    let rotating = Instant::now();
    let new_kid = keys.rotate(next).unwrap().into_kid();
    let (_, jwks) = fetch_jwks(&jwks_url).await;
    if jwks.find(first.kid()).is_none() {
        return stalled_or_broken("the previous key is not published", lifetime, rotating);
    }
    assert_eq!(jwks.keys.len(), 2);

    // The app still accepts the previous key's token (BearerJwt, by kid)...
    let bearer = format!("Bearer {old}");
    let reply = get_with(&url, &[("authorization", &bearer)]).await;
    if reply.status == 401 {
        return stalled_or_broken("the previous key's token is refused", lifetime, rotating);
    }
    assert_eq!(reply.status, 200);
    assert_eq!(kid(&reply.text()), new_kid);

    // ...until the key retires: lifetime + grace (0), at the next whole second by the wall
    // clock, which the JWKS shows as soon as it happens.
    let jwks = within("the previous key retires", async {
        loop {
            let (_, jwks) = fetch_jwks(&jwks_url).await;
            if jwks.find(first.kid()).is_none() {
                break jwks;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(
        jwks.keys[0].common.key_id.as_deref(),
        Some(new_kid.as_str())
    );
    // The token expired at most a liveness bound ago, within the verifier's 30 s leeway:
    // only the retired key makes it fail.
    let hits = recorded.count();
    let reply = get_with(&url, &[("authorization", &bearer)]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate").unwrap(),
        r#"Bearer error="invalid_token""#
    );
    assert_eq!(recorded.count(), hits, "nothing forwarded");
    Attempt::Held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_withdraws_the_key_and_its_cached_tokens() {
    let keys = KeySet::new(KeySigner::rs512(KeyPair::generate_rsa(2048).unwrap()).unwrap())
        .rotation_delay(Duration::ZERO);
    let (app, _target) = app(&keys, ProxyLayer::new(keys.signer())).await;
    let url = format!("http://{app}/proxy/x");
    let old = get_with(&url, &[("x-test-user", "Alice:ROLE_USER")])
        .await
        .text();
    let old_kid = kid(&old);
    let new_kid = keys
        .rotate(KeyPair::generate_rsa(2048).unwrap())
        .unwrap()
        .into_kid();
    assert!(keys.revoke(&old_kid).unwrap());

    let (_, jwks) = fetch_jwks(&format!("http://{app}{JWKS_PATH}")).await;
    assert_eq!(jwks.keys.len(), 1);
    assert!(decode_with_jwks(&old, &jwks).is_err());
    // The cache signs afresh with the active key.
    let fresh = get_with(&url, &[("x-test-user", "Alice:ROLE_USER")])
        .await
        .text();
    assert_eq!(kid(&fresh), new_kid);
    decode_with_jwks(&fresh, &jwks).unwrap();
    // And the app refuses the revoked key's token.
    let reply = get_with(&url, &[("authorization", &format!("Bearer {old}"))]).await;
    assert_eq!(reply.status, 401);
}
