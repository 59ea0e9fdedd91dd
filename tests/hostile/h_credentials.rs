//! H. Credentials, identity headers, leakage.
//!
//! H6 (no secret in logs) is `tests/tracing_redaction.rs`: it installs a global subscriber,
//! so it has its own test binary.

use tower_identity_proxy::{
    ProxyLayer,
    identity::Identity,
    jwt::{JwtSigner, SignError, Token},
};

use crate::support::*;

#[tokio::test]
async fn h1_client_credentials_never_reach_the_target() {
    let (up, app) = setup().await;
    // alice:alice-password
    let basic = base64_basic(ALICE, ALICE_PW);
    let r = app
        .get(
            "/proxy/echo",
            &format!("Authorization: Basic {basic}\r\nProxy-Authorization: Basic eDp5\r\n"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.only();
    let claims = decode_rs512(&got.bearer());
    assert_eq!(claims["sub"], ALICE);
    assert!(!got.has("proxy-authorization"));
    let head = got.head_str();
    assert!(!head.contains(&basic), "{head}");
    assert!(!head.contains("eDp5"), "{head}");
}

#[tokio::test]
async fn h1_two_authorization_lines_are_refused() {
    let (up, app) = setup().await;
    let basic = base64_basic(ALICE, ALICE_PW);
    let r = app
        .get(
            "/proxy/echo",
            &format!("Authorization: Basic {basic}\r\nauthorization: Bearer forged\r\n"),
        )
        .await;
    assert_eq!(r.status, 401);
    up.assert_untouched();
}

/// Whatever scheme the first line names: a line of a scheme no extractor knows must not
/// hide a second one with wrong credentials, which would make the caller anonymous.
#[tokio::test]
async fn h1_two_authorization_lines_are_refused_whatever_the_first_scheme() {
    let (up, app) = setup().await;
    let wrong = base64_basic(ALICE, "not-her-password");
    for lines in [
        format!("Authorization: Foo x\r\nauthorization: Basic {wrong}\r\n"),
        "Authorization: Foo x\r\nauthorization: Bearer forged\r\n".to_owned(),
        "Authorization: Foo x\r\nauthorization: Foo y\r\n".to_owned(),
    ] {
        let r = app.get("/proxy/echo", &lines).await;
        assert_eq!(r.status, 401, "{lines}: {}", r.text());
        assert_eq!(
            r.text(),
            "Several Authorization headers were sent.",
            "{lines}"
        );
    }
    up.assert_untouched();
}

pub fn base64_basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
}

/// A signer that always fails.
struct Failing;

impl JwtSigner for Failing {
    async fn sign(&self, _identity: &Identity) -> Result<Token, SignError> {
        Err(SignError::new("the HSM is unplugged"))
    }
}

#[tokio::test]
async fn h5_signer_failure_fails_closed() {
    let up = Upstream::ok().await;
    let app = start_app(ProxyLayer::uncached(Failing)).await;
    app.target(&up, "");
    let r = app.get("/proxy/x", "Authorization: Basic eDp5\r\n").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "The proxy could not sign the identity token.");
    assert!(!r.text().contains("HSM"));
    up.assert_untouched();
}

#[tokio::test]
async fn h2_cookies_are_not_forwarded_by_default() {
    let (up, app) = setup().await;
    let r = app
        .get(
            "/proxy/echo",
            "Cookie: JSESSIONID=s3cr3t; theme=dark\r\nCookie: b=2\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert!(!got.has("cookie"));
    assert!(!got.raw().windows(6).any(|w| w == b"s3cr3t"));
}

#[tokio::test]
async fn h2_forwarded_cookies_never_include_the_protected_session() {
    let up = Upstream::ok().await;
    let app = start_app(
        layer().cookies(
            tower_identity_proxy::rules::CookiePolicy::new()
                .forward(true)
                .protect("JSESSIONID"),
        ),
    )
    .await;
    app.target(&up, "");
    let r = app
        .get(
            "/proxy/echo",
            "Cookie: JSESSIONID=s3cr3t; theme=dark\r\nCookie: b=2;JSESSIONID=again\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert_eq!(got.one("cookie"), "theme=dark; b=2");
    assert!(!got.raw().windows(6).any(|w| w == b"s3cr3t"));
}

#[tokio::test]
async fn h3_identity_headers_from_clients_are_not_trusted() {
    // The crate ships no extractor that trusts a header such as X-Remote-User; with the
    // default chain, a client claiming to be admin is anonymous.
    let (up, app) = setup().await;
    let r = app
        .get(
            "/proxy/echo",
            "X-Remote-User: admin\r\nX-Forwarded-User: admin\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert_eq!(decode_rs512(&got.bearer())["sub"], "anonymousUser");
    assert!(!got.has("x-forwarded-user"));
}

#[tokio::test]
async fn h4_wrong_credentials_are_401_never_anonymous() {
    let (up, app) = setup().await;
    for auth in [
        base64_basic(ALICE, "wrong"),
        base64_basic("mallory", "x"),
        "!!!not-base64".to_owned(),
    ] {
        let r = app
            .get("/proxy/echo", &format!("Authorization: Basic {auth}\r\n"))
            .await;
        assert_eq!(r.status, 401, "{auth}");
        assert!(
            r.one("www-authenticate").starts_with("Basic"),
            "{}",
            r.head_str()
        );
    }
    up.assert_untouched();
}

/// A scheme that is not an RFC 9110 token (a tab or another character where the space
/// belongs, a comma, nothing at all) is a malformed field, not "another scheme": wrong
/// credentials behind it are `401`, never anonymous.
#[tokio::test]
async fn h4_credentials_behind_a_malformed_scheme_are_401_never_anonymous() {
    let (up, app) = setup().await;
    let wrong = base64_basic(ALICE, "wrong");
    for line in [
        format!("Authorization: Basic\t{wrong}"),
        "Authorization: Bearer\tforged".to_owned(),
        "Authorization: Bearer,forged".to_owned(),
        "Authorization: ".to_owned(),
    ] {
        let r = app.get("/proxy/echo", &format!("{line}\r\n")).await;
        assert_eq!(r.status, 401, "{line:?}: {}", r.text());
        assert!(r.has("www-authenticate"), "{}", r.head_str());
    }
    up.assert_untouched();
}

#[tokio::test]
async fn h7_https_target_that_is_not_tls_is_502_and_gets_no_token() {
    // The "https" target is a plain HTTP server: it answers the TLS hello with a 400, as
    // such servers do. The handshake fails; nothing readable (no request, no token) is
    // ever sent to it.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let up = Upstream::script(move |mut conn| {
        let seen = seen_tx.clone();
        async move {
            conn.wire.fill().await;
            let _ = seen.send(std::mem::take(&mut conn.wire.buf));
            conn.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        }
    })
    .await;
    let app = start_app(layer()).await;
    app.handle
        .set_target(Some(&format!("https://{}", up.addr)))
        .unwrap();
    let r = app.get("/proxy/x", "").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "The proxy target could not be reached.");
    let hello = seen_rx.recv().await.expect("a TLS hello");
    assert_eq!(hello[0], 0x16, "not a TLS handshake record");
    assert!(!hello.windows(6).any(|w| w == b"Bearer"));
}
