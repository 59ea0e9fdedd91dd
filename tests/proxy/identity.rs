//! Identity: who the target is told the caller is, and which requests are refused.

use axum::{
    extract::Request,
    middleware::{self, Next},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderValue, StatusCode, request::Parts};
use serde_json::json;
use tower_identity_proxy::identity::{
    Anonymous, BasicAuth, BearerJwt, CredentialStore, FromExtensions, Identity, IdentityExtractor,
    Rejection,
};

use crate::{
    common::{
        self, EchoTarget, RSA_PKCS8_PEM, RSA_PUBLIC_PEM, Reply, basic, get_with, inner_echo,
        now_secs, rsa_keys, serve, spawn_app,
    },
    layer_to,
};

/// `GET /proxy/who` with these headers; the claims the target received when it was reached.
async fn who(app: &common::Server, target: &EchoTarget, headers: &[(&str, &str)]) -> Reply {
    let before = target.count();
    let r = get_with(&app.url("/proxy/who"), headers).await;
    if r.status == 200 {
        assert_eq!(target.count(), before + 1);
    }
    r
}

fn claims_of_last(target: &EchoTarget) -> (String, Vec<String>) {
    let claims = target.last().claims();
    (
        claims["sub"].as_str().unwrap().to_owned(),
        serde_json::from_value(claims["authorities"].clone()).unwrap(),
    )
}

#[test]
fn identity_roles_are_sorted_and_unique() {
    let i = Identity::new("Alice", ["ROLE_WONDERLAND", "ROLE_USER", "ROLE_USER", "A"]);
    assert_eq!(i.name(), "Alice");
    assert_eq!(i.roles(), ["A", "ROLE_USER", "ROLE_WONDERLAND"]);
    assert!(i.has_role("ROLE_USER") && !i.has_role("ROLE_ADMIN"));
    assert_eq!(Identity::anonymous().name(), "anonymousUser");
    assert_eq!(Identity::anonymous().roles(), ["ROLE_ANONYMOUS"]);
}

#[tokio::test]
async fn the_tokens_authorities_are_the_sorted_unique_roles() {
    let target = common::echo_target().await;
    let extractor = |_: &Parts| async {
        Ok(Some(Identity::new(
            "carol",
            ["ROLE_B", "ROLE_A", "ROLE_B", "ROLE_C", "ROLE_A"],
        )))
    };
    let app = spawn_app(layer_to(&target).with_identity(extractor)).await;
    assert_eq!(who(&app, &target, &[]).await.status, 200);
    assert_eq!(
        claims_of_last(&target),
        (
            "carol".into(),
            vec!["ROLE_A".into(), "ROLE_B".into(), "ROLE_C".into()]
        )
    );
}

#[tokio::test]
async fn anonymous_by_default_with_configurable_roles() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    who(&app, &target, &[]).await;
    assert_eq!(
        claims_of_last(&target),
        ("anonymousUser".into(), vec!["ROLE_ANONYMOUS".into()])
    );

    // An app without security: anonymous callers hold every role.
    let app = spawn_app(layer_to(&target).with_identity(Anonymous::unsecured())).await;
    who(&app, &target, &[("authorization", &basic("x", "y"))]).await;
    assert_eq!(
        claims_of_last(&target),
        (
            "anonymousUser".into(),
            vec![
                "ROLE_ADMIN".into(),
                "ROLE_ANONYMOUS".into(),
                "ROLE_USER".into()
            ]
        )
    );

    let app =
        spawn_app(layer_to(&target).with_identity(Anonymous::with_roles(["ROLE_GUEST"]))).await;
    who(&app, &target, &[]).await;
    assert_eq!(claims_of_last(&target).1, ["ROLE_GUEST"]);
}

#[tokio::test]
async fn an_identity_from_the_apps_own_middleware() {
    let target = common::echo_target().await;
    // The app's authentication: here, a trusted header names the user.
    let auth = middleware::from_fn(|mut req: Request, next: Next| async {
        if let Some(user) = req
            .headers()
            .get("x-test-user")
            .and_then(|v| v.to_str().ok())
        {
            let identity = Identity::new(user, ["ROLE_USER", "ROLE_FROM_APP"]);
            req.extensions_mut().insert(identity);
        }
        next.run(req).await
    });
    let app = serve(
        inner_echo()
            .layer(layer_to(&target).with_identity(FromExtensions))
            .layer(auth.clone()),
    )
    .await;
    let r = who(&app, &target, &[("x-test-user", "dave")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        claims_of_last(&target),
        (
            "dave".into(),
            vec!["ROLE_FROM_APP".into(), "ROLE_USER".into()]
        )
    );
    // No identity and nothing after it: 401, nothing forwarded.
    let before = target.count();
    let r = who(&app, &target, &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(target.count(), before);

    let app = serve(
        inner_echo()
            .layer(layer_to(&target).with_identity(FromExtensions.or_anonymous()))
            .layer(auth),
    )
    .await;
    assert_eq!(who(&app, &target, &[]).await.status, 200);
    assert_eq!(claims_of_last(&target).0, "anonymousUser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_authentication_against_users_changed_at_run_time() {
    let target = common::echo_target().await;
    let users = CredentialStore::new();
    let app =
        spawn_app(layer_to(&target).with_identity(BasicAuth::new(users.clone()).or_anonymous()))
            .await;
    let alice = basic("Alice", "abcdef123456");

    let r = who(&app, &target, &[("authorization", &alice)]).await;
    assert_eq!(r.status, 401, "unknown users are refused, not anonymous");
    assert_eq!(target.count(), 0);

    let store = users.clone();
    tokio::task::spawn_blocking(move || {
        store.insert("Alice", "abcdef123456", ["ROLE_WONDERLAND", "ROLE_USER"])
    })
    .await
    .unwrap()
    .unwrap();
    let r = who(&app, &target, &[("authorization", &alice)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        claims_of_last(&target),
        (
            "Alice".into(),
            vec!["ROLE_USER".into(), "ROLE_WONDERLAND".into()]
        )
    );

    assert!(users.remove("Alice"));
    let before = target.count();
    let r = who(&app, &target, &[("authorization", &alice)]).await;
    assert_eq!(r.status, 401);
    assert_eq!(target.count(), before);
}

#[tokio::test]
async fn bearer_tokens_signed_by_the_app_are_accepted() {
    let target = common::echo_target().await;
    let users = CredentialStore::new();
    users.insert("Alice", "pw", ["ROLE_USER"]).unwrap();
    let identity = BasicAuth::new(users)
        .or(BearerJwt::new(rsa_keys().verifier()))
        .or_anonymous();
    let app = spawn_app(layer_to(&target).with_identity(identity)).await;
    assert_eq!(
        who(&app, &target, &[("authorization", &basic("Alice", "pw"))])
            .await
            .status,
        200
    );
    // The target calls back with the token it received.
    let token = common::bearer(&target.last().headers);
    let r = who(
        &app,
        &target,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        claims_of_last(&target),
        ("Alice".into(), vec!["ROLE_USER".into()])
    );
}

/// A token that comes back (the target calling the app back) is re-signed with its own
/// expiry at most: presenting each new token in turn never extends a caller's access
/// (before: each call handed out a token with a fresh five-minute lifetime, for ever, even
/// for a user removed since).
#[tokio::test]
async fn a_token_that_comes_back_is_never_re_signed_past_its_expiry() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let target = common::echo_target().await;
    let app =
        spawn_app(layer_to(&target).with_identity(BearerJwt::new(rsa_keys().verifier()))).await;
    let now = now_secs();
    let exp = now + 40;
    let own = EncodingKey::from_rsa_pem(RSA_PKCS8_PEM.as_bytes()).unwrap();
    let mut token = forge(
        Algorithm::RS512,
        &own,
        &json!({ "sub": "Alice", "authorities": ["ROLE_USER"], "iat": now, "exp": exp }),
    );
    for round in 0..3 {
        let r = who(
            &app,
            &target,
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        let claims = target.last().claims();
        assert_eq!(claims["sub"], "Alice");
        let got = claims["exp"].as_u64().unwrap();
        assert!(
            got <= exp,
            "round {round}: exp {got} past the presented {exp}"
        );
        // The layer's lifetime (five minutes) would have given much more.
        assert!(got + 200 < now + 300, "round {round}: exp {got}");
        // The target calls back with what it received.
        token = common::bearer(&target.last().headers);
    }
}

#[tokio::test]
async fn no_credentials_means_the_next_extractor_then_anonymous() {
    let target = common::echo_target().await;
    let identity = BasicAuth::new(CredentialStore::new())
        .or(BearerJwt::new(rsa_keys().verifier()))
        .or_anonymous();
    let app = spawn_app(layer_to(&target).with_identity(identity)).await;
    for headers in [
        vec![],
        vec![("authorization", "Negotiate YIIB")],
        vec![("cookie", "session=abc")],
    ] {
        let r = who(&app, &target, &headers).await;
        assert_eq!(r.status, 200, "{headers:?}");
        assert_eq!(claims_of_last(&target).0, "anonymousUser");
    }
}

/// A token signed with jsonwebtoken directly (not by the crate).
fn forge(
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    claims: &serde_json::Value,
) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, key).unwrap()
}

fn unsigned(claims: &serde_json::Value) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{head}.{body}.")
}

/// Tokens the app must refuse, made by hand.
pub(crate) fn refused_tokens() -> Vec<(&'static str, String)> {
    use jsonwebtoken::{Algorithm as A, EncodingKey};
    let now = now_secs();
    let good =
        json!({ "sub": "mallory", "authorities": ["ROLE_ADMIN"], "iat": now, "exp": now + 300 });
    let own = EncodingKey::from_rsa_pem(RSA_PKCS8_PEM.as_bytes()).unwrap();
    let other = EncodingKey::from_rsa_pem(common::OTHER_RSA_PKCS8_PEM.as_bytes()).unwrap();
    let hmac = EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()).unwrap();
    let expired =
        json!({ "sub": "mallory", "authorities": [], "iat": now - 3600, "exp": now - 600 });
    let no_exp = json!({ "sub": "mallory", "authorities": [], "iat": now });
    let future =
        json!({ "sub": "mallory", "authorities": [], "iat": now + 3600, "exp": now + 7200 });
    let with_aud =
        json!({ "sub": "mallory", "authorities": [], "exp": now + 300, "aud": "elsewhere" });
    vec![
        ("alg none", unsigned(&good)),
        (
            "HS512 with the public key as secret",
            forge(A::HS512, &hmac, &good),
        ),
        (
            "HS256 with the public key as secret",
            forge(A::HS256, &hmac, &good),
        ),
        ("another key", forge(A::RS512, &other, &good)),
        ("expired", forge(A::RS512, &own, &expired)),
        ("no exp", forge(A::RS512, &own, &no_exp)),
        ("issued in the future", forge(A::RS512, &own, &future)),
        (
            "an audience it does not expect",
            forge(A::RS512, &own, &with_aud),
        ),
        ("RS256 where RS512 is pinned", forge(A::RS256, &own, &good)),
        ("PS512 where RS512 is pinned", forge(A::PS512, &own, &good)),
        ("garbage", "not.a.token".into()),
        ("empty", String::new()),
        ("tampered", {
            let t = forge(A::RS512, &own, &good);
            let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
            parts[1] = URL_SAFE_NO_PAD.encode(
                json!({ "sub": "root", "authorities": ["ROLE_ADMIN"], "exp": now + 300 })
                    .to_string(),
            );
            parts.join(".")
        }),
    ]
}

#[tokio::test]
async fn wrong_or_malformed_credentials_are_401_and_nothing_is_forwarded() {
    let target = common::echo_target().await;
    let users = CredentialStore::new();
    users
        .insert("Alice", "abcdef123456", ["ROLE_USER"])
        .unwrap();
    let identity = BasicAuth::new(users)
        .or(BearerJwt::new(rsa_keys().verifier()))
        .or_anonymous();
    let app = spawn_app(layer_to(&target).with_identity(identity)).await;

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut cases: Vec<(String, String, &str)> = vec![
        ("wrong password".into(), basic("Alice", "nope"), "Basic"),
        ("unknown user".into(), basic("Bob", "abcdef123456"), "Basic"),
        ("not base64".into(), "Basic %%%".into(), "Basic"),
        (
            "no colon".into(),
            format!("Basic {}", b64("Alice")),
            "Basic",
        ),
        ("empty Basic".into(), "Basic".into(), "Basic"),
    ];
    for (name, token) in refused_tokens() {
        cases.push((name.into(), format!("Bearer {token}"), "Bearer"));
    }
    for (name, authorization, scheme) in &cases {
        let r = who(&app, &target, &[("authorization", authorization)]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with(scheme), "{name}: {challenge}");
        assert_eq!(
            r.header("content-type").unwrap(),
            "text/plain; charset=utf-8"
        );
    }
    assert_eq!(target.count(), 0, "no refused request reached the target");

    // The same with no fallback at all: still 401, never anonymous.
    let strict =
        spawn_app(layer_to(&target).with_identity(BearerJwt::new(rsa_keys().verifier()))).await;
    let r = who(&strict, &target, &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(target.count(), 0);
}

#[tokio::test]
async fn an_extractor_written_by_the_app() {
    let target = common::echo_target().await;
    // A session cookie looked up in the app's sessions: a few lines.
    let sessions = std::sync::Arc::new(std::collections::HashMap::from([(
        "s3cr3t".to_owned(),
        Identity::new("Alice", ["ROLE_USER"]),
    )]));
    let from_session = move |parts: &Parts| {
        let sessions = sessions.clone();
        let cookie = parts
            .headers
            .get(http::header::COOKIE)
            .and_then(|c| c.to_str().ok())
            .and_then(|c| c.strip_prefix("session="))
            .map(str::to_owned);
        async move {
            match cookie {
                None => Ok(None),
                Some(id) => match sessions.get(&id) {
                    Some(identity) => Ok(Some(identity.clone())),
                    None => Err(Rejection::new(
                        StatusCode::FORBIDDEN,
                        "The session has expired.",
                    )),
                },
            }
        }
    };
    let app = spawn_app(layer_to(&target).with_identity(from_session.or_anonymous())).await;
    assert_eq!(
        who(&app, &target, &[("cookie", "session=s3cr3t")])
            .await
            .status,
        200
    );
    assert_eq!(
        claims_of_last(&target),
        ("Alice".into(), vec!["ROLE_USER".into()])
    );
    // The app's session cookie itself is not forwarded to the target.
    assert!(target.last().header("cookie").is_none());
    let r = who(&app, &target, &[("cookie", "session=stale")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "The session has expired.");
    assert_eq!(who(&app, &target, &[]).await.status, 200);
    assert_eq!(claims_of_last(&target).0, "anonymousUser");
    assert_eq!(target.count(), 2);
}

/// Every `WWW-Authenticate` line of a reply, in order.
fn challenges(r: &Reply) -> Vec<String> {
    r.headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

const BASIC_PROXY: &str = r#"Basic realm="proxy", charset="UTF-8""#;

#[tokio::test]
async fn a_401_without_credentials_names_the_schemes_the_chain_accepts() {
    let target = common::echo_target().await;
    let users = CredentialStore::new();
    users.insert("Alice", "pw", ["ROLE_USER"]).unwrap();
    let bearer = || BearerJwt::new(rsa_keys().verifier());

    // Basic, then Bearer: both challenges, one line each, in chain order.
    let app =
        spawn_app(layer_to(&target).with_identity(BasicAuth::new(users.clone()).or(bearer())))
            .await;
    for headers in [vec![], vec![("authorization", "Negotiate YIIB")]] {
        let r = who(&app, &target, &headers).await;
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(challenges(&r), [BASIC_PROXY, "Bearer"], "{headers:?}");
        assert_eq!(r.text(), "Authentication is required.");
    }
    // A rejected password: the Basic challenge, as before.
    let r = who(&app, &target, &[("authorization", &basic("Alice", "nope"))]).await;
    assert_eq!(r.status, 401);
    assert_eq!(challenges(&r), [BASIC_PROXY]);
    // A rejected token: the Bearer error.
    let r = who(&app, &target, &[("authorization", "Bearer not.a.token")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(challenges(&r), [r#"Bearer error="invalid_token""#]);

    // Each alone, the realm as configured.
    let basic_only = BasicAuth::new(users.clone()).realm("orders").unwrap();
    let app = spawn_app(layer_to(&target).with_identity(basic_only)).await;
    let r = who(&app, &target, &[]).await;
    assert_eq!(challenges(&r), [r#"Basic realm="orders", charset="UTF-8""#]);
    let r = who(&app, &target, &[("authorization", &basic("Bob", "pw"))]).await;
    assert_eq!(challenges(&r), [r#"Basic realm="orders", charset="UTF-8""#]);
    let app = spawn_app(layer_to(&target).with_identity(bearer())).await;
    assert_eq!(challenges(&who(&app, &target, &[]).await), ["Bearer"]);
    assert_eq!(target.count(), 0, "no refused request reached the target");
}

#[tokio::test]
async fn a_401_from_extractors_that_name_no_challenge_falls_back_to_bearer() {
    let target = common::echo_target().await;

    // The app's own middleware found no one: the fallback.
    let app = spawn_app(layer_to(&target).with_identity(FromExtensions)).await;
    let r = who(&app, &target, &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(challenges(&r), ["Bearer"]);

    // A closure's 401 without a challenge gets the fallback too; other statuses get none.
    let by_cookie = |parts: &Parts| {
        let cookie = parts.headers.get(http::header::COOKIE).cloned();
        async move {
            match cookie.as_ref().map(HeaderValue::as_bytes) {
                None => Ok(None),
                Some(b"session=gone") => Err(Rejection::new(StatusCode::FORBIDDEN, "Gone.")),
                Some(_) => Err(Rejection::unauthorized(None, "The session is not valid.")),
            }
        }
    };
    let app = spawn_app(layer_to(&target).with_identity(by_cookie)).await;
    for headers in [vec![], vec![("cookie", "session=stale")]] {
        let r = who(&app, &target, &headers).await;
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(challenges(&r), ["Bearer"], "{headers:?}");
    }
    let r = who(&app, &target, &[("cookie", "session=gone")]).await;
    assert_eq!(r.status, 403);
    assert!(challenges(&r).is_empty());

    // Named by the app.
    let session = HeaderValue::from_static(r#"Session realm="app""#);
    let app = spawn_app(layer_to(&target).with_identity(by_cookie.with_challenge(session))).await;
    for headers in [vec![], vec![("cookie", "session=stale")]] {
        let r = who(&app, &target, &headers).await;
        assert_eq!(challenges(&r), [r#"Session realm="app""#], "{headers:?}");
    }
    assert_eq!(target.count(), 0);
}
