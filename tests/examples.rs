//! The small examples (`examples/axum.rs`, `tonic.rs`, `session_cookie.rs`) run as a user
//! runs them: their binaries, started with real command lines, reached over real sockets.
//! The demo and the verifying target have their own suites (`demo_server`, `walkthrough`,
//! `demo_trust`).

#![allow(unreachable_pub)]

mod common;

use common::*;
use http::StatusCode;
use serde_json::Value;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The claims of the token a target received, read without verification: the examples
/// sign with keys generated at start-up. Signature checks are the business of other suites.
fn claims_of(seen: &Seen) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(seen.token())
        .expect("a JWT")
        .claims
}

#[tokio::test]
async fn the_axum_example_protects_its_routes_and_proxies() {
    let target = echo_target().await;
    let app = Example::start(
        "axum",
        &["--listen", "127.0.0.1:0", "--target", &target.url()],
    )
    .await;

    let alice = basic("Alice", "abcdef123456");
    let who = within(
        "whoami",
        get_with(&app.url("/api/whoami"), &[("authorization", &alice)]),
    )
    .await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.text());
    assert_eq!(who.json()["name"], "Alice");
    assert_eq!(
        who.json()["roles"],
        serde_json::json!(["ROLE_USER", "ROLE_WONDERLAND"])
    );

    let anonymous = within("anonymous", get(&app.url("/api/whoami"))).await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    let wrong = basic("Alice", "wrong");
    let refused = within(
        "wrong",
        get_with(&app.url("/api/whoami"), &[("authorization", &wrong)]),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );

    let proxied = within(
        "proxy",
        get_with(&app.url("/proxy/hello?x=1"), &[("authorization", &alice)]),
    )
    .await;
    assert_eq!(proxied.status, StatusCode::OK, "{}", proxied.text());
    let seen = target.last();
    assert_eq!(seen.uri, "/hello?x=1");
    assert_eq!(claims_of(&seen)["sub"], "Alice");
    assert_eq!(target.count(), 1);
}

#[tokio::test]
async fn the_tonic_example_serves_grpc_and_proxies_http1_callers() {
    let target = echo_target().await;
    let app = Example::start(
        "tonic",
        &["--listen", "127.0.0.1:0", "--target", &target.url()],
    )
    .await;

    // Its own gRPC service answers.
    let channel = tonic::transport::Channel::from_shared(app.url("")).unwrap();
    let channel = within("connect", channel.connect()).await.unwrap();
    let mut health = HealthClient::new(channel);
    let status = within(
        "check",
        health.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(status.get_ref().status, ServingStatus::Serving as i32);

    // An HTTP/1.1 caller reaches the target through `/proxy`, as anonymousUser.
    let got = within("h1 proxy", get(&app.url("/proxy/hello"))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.version, http::Version::HTTP_11);
    let seen = target.last();
    assert_eq!(seen.uri, "/hello");
    assert_eq!(claims_of(&seen)["sub"], "anonymousUser");
}

#[tokio::test]
async fn the_session_cookie_example_reads_its_cookie_among_others() {
    let target = echo_target().await;
    let app = Example::start(
        "session_cookie",
        &["--listen", "127.0.0.1:0", "--target", &target.url()],
    )
    .await;

    // Log in with Basic: a session cookie.
    let login = within(
        "login",
        send(
            http::Request::post(app.url("/login"))
                .header("authorization", basic("Alice", "abcdef123456"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    let set_cookie = login.header("set-cookie").expect("a session cookie");
    let session = set_cookie.split(';').next().unwrap().to_owned();
    assert!(session.starts_with("session="), "{set_cookie}");

    // The session among other cookies, in one field or several.
    let cookies = format!("theme=dark; {session}; lang=en");
    let who = within(
        "whoami",
        get_with(&app.url("/api/whoami"), &[("cookie", &cookies)]),
    )
    .await;
    assert_eq!((who.status, who.text().as_str()), (StatusCode::OK, "Alice"));
    let mut req = http::Request::get(app.url("/api/whoami"));
    req = req
        .header("cookie", "theme=dark")
        .header("cookie", &session);
    let who = within("two fields", send(req.body(empty()).unwrap())).await;
    assert_eq!((who.status, who.text().as_str()), (StatusCode::OK, "Alice"));

    // The proxy uses the same extractor.
    let proxied = within(
        "proxy",
        get_with(&app.url("/proxy/x"), &[("cookie", &cookies)]),
    )
    .await;
    assert_eq!(proxied.status, StatusCode::OK, "{}", proxied.text());
    assert_eq!(claims_of(&target.last())["sub"], "Alice");
    assert_eq!(
        target.last().header("cookie"),
        None,
        "cookies are not forwarded"
    );

    // Only unrelated cookies: the next extractors (Basic, then anonymous).
    let other = within(
        "other",
        get_with(&app.url("/api/whoami"), &[("cookie", "theme=dark")]),
    )
    .await;
    assert_eq!(
        (other.status, other.text().as_str()),
        (StatusCode::OK, "anonymousUser")
    );

    // An unknown session: 401 with the session's challenge, never Basic's.
    for url in [app.url("/api/whoami"), app.url("/proxy/x")] {
        let bad = within(
            "bad",
            get_with(&url, &[("cookie", "theme=dark; session=stolen")]),
        )
        .await;
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED, "{url}");
        assert_eq!(bad.text(), "The session is not valid.");
        let challenge = bad.header("www-authenticate").unwrap();
        assert!(challenge.starts_with("Cookie "), "{url}: {challenge}");
    }
    assert_eq!(target.count(), 1);
}
