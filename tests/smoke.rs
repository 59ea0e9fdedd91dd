//! A first end-to-end check: app with the layer, a real target, real sockets.

use axum::{Router, routing::get};
use tower_identity_proxy::{KeyPair, KeySigner, ProxyLayer};

#[tokio::test]
async fn forwards_with_a_verifiable_token() {
    let keys = KeyPair::generate_rsa(2048).unwrap();
    let target = Router::new().route(
        "/hello",
        get(|headers: axum::http::HeaderMap| async move {
            format!(
                "{}|{}|{}",
                headers["authorization"].to_str().unwrap(),
                headers["x-forwarded-host"].to_str().unwrap(),
                headers["host"].to_str().unwrap()
            )
        }),
    );
    let tl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taddr = tl.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(tl, target).await.unwrap() });

    let proxy = ProxyLayer::new(KeySigner::rs512(keys.clone()).unwrap());
    let handle = proxy.handle();
    let app = Router::new()
        .route("/api", get(|| async { "api" }))
        .layer(proxy);
    let al = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let aaddr = al.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(al, app).await.unwrap() });

    let get = |path: &str| {
        let url = format!("http://{aaddr}{path}");
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-s", "-i", &url])
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let disabled = get("/proxy/hello").await;
    assert!(disabled.starts_with("HTTP/1.1 501"), "{disabled}");
    assert!(disabled.ends_with("The proxy is disabled."), "{disabled}");
    assert!(get("/api").await.ends_with("api"));

    handle.set_target(Some(&format!("http://{taddr}"))).unwrap();
    let res = get("/proxy/hello").await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let body = res.rsplit("\r\n\r\n").next().unwrap();
    let mut parts = body.split('|');
    let auth = parts.next().unwrap();
    let token = auth.strip_prefix("Bearer ").unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS512);
    v.set_required_spec_claims(&["exp", "sub"]);
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(keys.public_key_pem().as_bytes()).unwrap();
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).unwrap();
    assert_eq!(data.claims["sub"], "anonymousUser");
    assert_eq!(
        data.claims["authorities"],
        serde_json::json!(["ROLE_ANONYMOUS"])
    );
    assert_eq!(parts.next().unwrap(), aaddr.to_string());
    assert_eq!(parts.next().unwrap(), taddr.to_string());
}
