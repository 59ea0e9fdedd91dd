//! H. Credentials, identity headers, leakage.

use tower_identity_proxy::{Identity, JwtSigner, ProxyLayer, SignError, Token};

use crate::support::*;

async fn setup() -> (Upstream, App) {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "/api/v1");
    (up, app)
}

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
    let claims = decode_jwt(&got.bearer());
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
