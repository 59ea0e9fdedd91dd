//! The proxy stacked with tower-http's layers in the order the crate docs give ("With
//! tower-http"), served over real sockets: the layers compose with it. Sensitive headers
//! are never logged, the request id reaches the target and comes back, a body over the
//! limit is answered `413` with nothing forwarded, and the app's own routes read the caller
//! through the same identity chain. Its own test binary: it installs a global subscriber.

#![allow(unreachable_pub)]

mod common;

use std::{sync::OnceLock, time::Duration};

use axum::{Router, routing};
use common::{log::Captured, *};
use http::{Method, Request, StatusCode, header};
use tower::ServiceBuilder;
use tower_http::{
    ServiceBuilderExt,
    limit::RequestBodyLimitLayer,
    request_id::MakeRequestUuid,
    timeout::TimeoutLayer,
    trace::{DefaultMakeSpan, DefaultOnRequest, TraceLayer},
};
use tower_identity_proxy::{
    ProxyHandle, ProxyLayer,
    identity::{Authenticate, BasicAuth, CredentialStore, Identity, IdentityExtractor},
    jwt::KeySigner,
};

const LIMIT: usize = 1024;
const PASSWORD: &str = "abcdef123456";
const SESSION: &str = "session-value-never-logged";

/// The log of this test binary, captured at TRACE level from every crate.
fn captured() -> Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(log.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        log
    })
    .clone()
}

/// The documented stack around a router with one protected route, proxying to `target`.
async fn app(target: &str) -> Server {
    let users = CredentialStore::new();
    let store = users.clone();
    tokio::task::spawn_blocking(move || store.insert("Alice", PASSWORD, ["ROLE_USER"]))
        .await
        .unwrap()
        .unwrap();
    let identity = BasicAuth::new(users).or_anonymous();
    let routes = Router::new()
        .route(
            "/api/whoami",
            routing::get(|who: Identity| async move { who.name().to_owned() }),
        )
        .route_layer(Authenticate::new(identity.clone()).require_role("ROLE_USER"))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ));
    let proxy = ProxyLayer::new(KeySigner::rs512(rsa_keys()).unwrap())
        .with_identity(identity)
        .handle(ProxyHandle::with_target(target.parse().unwrap()));
    let stack = ServiceBuilder::new()
        // axum::serve wants axum's body; the rest is the documented order.
        .map_response(|res: http::Response<_>| res.map(axum::body::Body::new))
        .set_x_request_id(MakeRequestUuid)
        .sensitive_request_headers([header::AUTHORIZATION, header::COOKIE].into())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().include_headers(true))
                .on_request(DefaultOnRequest::new().level(tracing::Level::INFO)),
        )
        .propagate_x_request_id()
        .layer(RequestBodyLimitLayer::new(LIMIT))
        .layer(proxy)
        .service(routes);
    Server::spawn(|listener| async move {
        let _ = axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service(stack),
        )
        .await;
    })
    .await
}

fn request(method: Method, url: String, body: TestBody) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(url)
        .header(header::AUTHORIZATION, basic("Alice", PASSWORD))
        .header(header::COOKIE, format!("theme=dark; session={SESSION}"))
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn sensitive_headers_are_never_logged() {
    let log = captured();
    let target = echo_target().await;
    let app = app(&target.url()).await;

    let proxied = send(request(Method::GET, app.url("/proxy/logged"), empty())).await;
    assert_eq!(proxied.status, StatusCode::OK);
    assert_eq!(target.last().claims()["sub"], "Alice");
    let own = send(request(Method::GET, app.url("/api/whoami"), empty())).await;
    assert_eq!((own.status, own.text().as_str()), (StatusCode::OK, "Alice"));

    let text = log.text();
    // The headers are logged (the request ids of both requests are there)...
    for reply in [&proxied, &own] {
        let id = reply.header("x-request-id").expect("a request id");
        assert!(text.contains(&id), "{id} not logged:\n{text}");
    }
    assert!(text.contains("Sensitive"), "{text}");
    // ...but not the credentials nor the cookie.
    let credentials = basic("Alice", PASSWORD);
    let encoded = credentials.trim_start_matches("Basic ");
    for secret in [encoded, PASSWORD, SESSION] {
        assert!(!text.contains(secret), "{secret} was logged:\n{text}");
    }
}

#[tokio::test]
async fn the_request_id_reaches_the_target_and_comes_back() {
    let target = echo_target().await;
    let app = app(&target.url()).await;

    // Set by the app when the client sends none.
    let reply = send(request(Method::GET, app.url("/proxy/id"), empty())).await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = reply.header("x-request-id").expect("a request id");
    assert!(!id.is_empty());
    assert_eq!(target.last().header("x-request-id"), Some(id));

    // The client's own is kept, end to end.
    let mut req = request(Method::GET, app.url("/proxy/id"), empty());
    req.headers_mut()
        .insert("x-request-id", "from-the-client".parse().unwrap());
    let reply = send(req).await;
    assert_eq!(
        reply.header("x-request-id").as_deref(),
        Some("from-the-client")
    );
    assert_eq!(
        target.last().header("x-request-id").as_deref(),
        Some("from-the-client")
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_nothing_is_forwarded() {
    let target = echo_target().await;
    let app = app(&target.url()).await;

    let too_big = send(request(
        Method::POST,
        app.url("/proxy/upload"),
        full(vec![b'x'; LIMIT + 1]),
    ))
    .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(target.count(), 0, "nothing reaches the target");

    // At the limit, the body is forwarded whole.
    let fits = send(request(
        Method::POST,
        app.url("/proxy/upload"),
        full(vec![b'y'; LIMIT]),
    ))
    .await;
    assert_eq!(fits.status, StatusCode::OK);
    assert_eq!(target.count(), 1);
    assert_eq!(target.last().body.len(), LIMIT);
}

#[tokio::test]
async fn the_apps_routes_use_the_same_identity_chain() {
    let target = echo_target().await;
    let app = app(&target.url()).await;

    // Anonymous: the chain lets it through, the route wants ROLE_USER.
    let anonymous = get(&app.url("/api/whoami")).await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    assert_eq!(anonymous.text(), "This requires the role ROLE_USER.");
    // Wrong password: the same 401 and challenge as the proxy answers.
    let wrong = get_with(
        &app.url("/api/whoami"),
        &[("authorization", &basic("Alice", "wrong-password"))],
    )
    .await;
    let proxied = get_with(
        &app.url("/proxy/x"),
        &[("authorization", &basic("Alice", "wrong-password"))],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (wrong.status, wrong.text(), wrong.header("www-authenticate")),
        (
            proxied.status,
            proxied.text(),
            proxied.header("www-authenticate")
        )
    );
    assert_eq!(target.count(), 0);
}
