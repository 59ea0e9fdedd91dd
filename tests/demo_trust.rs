//! The demo's trust chain with the example target (both run as their binaries, on real
//! sockets): the JWKS at `/.well-known/jwks.json`, `POST
//! /admin/keys/rotate`, and `examples/target.rs` verifying tokens of the previous and the
//! new key, in both its `--jwks` and `--public-key` modes.

mod common;

use common::{
    Example, RSA_PUBLIC_PEM, basic, decode_with_jwks, fetch_jwks, fixture_keys_dir, get, get_with,
    json_request as request, kid, remove_dir, temp_dir, token_target,
};
use jsonwebtoken::jwk::ThumbprintHash;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_in_the_demo_with_the_example_target() {
    let keys_dir = fixture_keys_dir("demo-trust-keys");
    let demo = Example::start(
        "demo",
        &[
            "--listen",
            "127.0.0.1:0",
            "--keys",
            keys_dir.to_str().unwrap(),
            // Signing with a rotated key at once: the example target refetches the set then.
            "--rotation-delay-secs",
            "0",
            "--user",
            "admin:admin-secret:ROLE_ADMIN",
            "--user",
            "Alice:abcdef123456:ROLE_USER,ROLE_WONDERLAND",
        ],
    )
    .await;
    remove_dir(&keys_dir);
    let app = |path: &str| format!("http://{}{path}", demo.addr);
    let admin = basic("admin", "admin-secret");
    let alice = basic("Alice", "abcdef123456");

    // The JWKS is public and names the key by its RFC 7638 thumbprint.
    let (reply, jwks) = fetch_jwks(&app("/.well-known/jwks.json")).await;
    assert_eq!(reply.header("content-type").unwrap(), "application/json");
    assert_eq!(jwks.keys.len(), 1);
    let first_kid = jwks.keys[0].thumbprint(ThumbprintHash::SHA256).unwrap();
    assert_eq!(
        jwks.keys[0].common.key_id.as_deref(),
        Some(first_kid.as_str())
    );

    let jwks = app("/.well-known/jwks.json");
    let target = Example::start("target", &["--jwks", &jwks, "--listen", "127.0.0.1:0"]).await;
    let set_target = |url: String| {
        let admin = admin.clone();
        let put = app("/admin/proxy");
        async move {
            let r = request("PUT", &put, Some(&admin), Some(json!({ "url": url }))).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    };
    set_target(format!("http://{}", target.addr)).await;

    let whoami = |mode: &str, auth: String| {
        let url = app(&format!("/proxy/whoami?mode={mode}"));
        async move { get_with(&url, &[("authorization", &auth)]).await }
    };
    let me = whoami("jwt", alice.clone()).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(
        me.json(),
        json!({ "name": "Alice", "roles": ["ROLE_USER", "ROLE_WONDERLAND"] })
    );

    // Rotation needs ROLE_ADMIN.
    let rotate = app("/admin/keys/rotate");
    assert_eq!(request("POST", &rotate, None, None).await.status, 403);
    assert_eq!(
        request("POST", &rotate, Some(&alice), None).await.status,
        403
    );
    let wrong = basic("admin", "nope");
    assert_eq!(
        request("POST", &rotate, Some(&wrong), None).await.status,
        401
    );
    let rotated = request("POST", &rotate, Some(&admin), None).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let new_kid = rotated.json()["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, first_kid);
    assert_eq!(rotated.json()["published"], json!([new_kid, first_kid]));
    let (_, jwks) = fetch_jwks(&app("/.well-known/jwks.json")).await;
    assert_eq!(jwks.keys.len(), 2);

    // Tokens the target receives now: Alice's cached one (previous key), a new one for
    // admin (new key); both verify with jsonwebtoken against the JWKS.
    let recorder = token_target().await;
    set_target(recorder.url()).await;
    assert_eq!(
        get_with(&app("/proxy/x"), &[("authorization", &alice)])
            .await
            .status,
        200
    );
    assert_eq!(
        get_with(&app("/proxy/x"), &[("authorization", &admin)])
            .await
            .status,
        200
    );
    let tokens = recorder.tokens();
    assert_eq!(kid(&tokens[0]), first_kid);
    assert_eq!(kid(&tokens[1]), new_kid);
    assert_eq!(decode_with_jwks(&tokens[0], &jwks).unwrap()["sub"], "Alice");
    assert_eq!(decode_with_jwks(&tokens[1], &jwks).unwrap()["sub"], "admin");
    set_target(format!("http://{}", target.addr)).await;

    // The example target verifies both keys' tokens (fetching the JWKS again for the new
    // kid), and the app accepts both back in session mode.
    let me = whoami("jwt", alice.clone()).await;
    assert_eq!(me.status, 200, "{}", me.text());
    let root = whoami("jwt", admin.clone()).await;
    assert_eq!(root.status, 200, "{}", root.text());
    assert_eq!(
        root.json(),
        json!({ "name": "admin", "roles": ["ROLE_ADMIN"] })
    );
    assert_eq!(whoami("session", alice.clone()).await.status, 200);
    let bob = request(
        "PUT",
        &app("/admin/users/Bob"),
        Some(&admin),
        Some(json!({ "password": "bob-secret", "roles": ["ROLE_USER"] })),
    )
    .await;
    assert_eq!(bob.status, 201);
    let session = whoami("session", basic("Bob", "bob-secret")).await;
    assert_eq!(session.status, 200, "{}", session.text());
    assert_eq!(
        session.json(),
        json!({ "name": "Bob", "roles": ["ROLE_USER"] })
    );
    // admin lacks ROLE_USER: the app refuses the call-back, the target answers 403.
    assert_eq!(whoami("session", admin.clone()).await.status, 403);

    // The target refuses what the proxy did not sign.
    let direct = format!("http://{}/whoami?mode=jwt", target.addr);
    let forged = get_with(
        &direct,
        &[(
            "authorization",
            "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiJ9.",
        )],
    )
    .await;
    assert_eq!(forged.status, 401);
    assert_eq!(
        forged.header("www-authenticate").unwrap(),
        r#"Bearer error="invalid_token""#
    );
    let admin_token = tokens[1].clone();
    let replayed = get_with(
        &direct,
        &[("authorization", &format!("Bearer {admin_token}"))],
    )
    .await;
    assert_eq!(
        replayed.status, 200,
        "a genuine token verifies directly too"
    );

    drop(demo);
    drop(target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_target_routes_and_public_key_mode() {
    let dir = temp_dir("target-public-key");
    let pem = dir.join("public-key.pem");
    std::fs::write(&pem, RSA_PUBLIC_PEM).unwrap();
    let target = Example::start(
        "target",
        &[
            "--public-key",
            pem.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    remove_dir(&dir);
    let url = |path: &str| format!("http://{}{path}", target.addr);

    // A token of the fixture key (signed by the crate, verified by the target's layer).
    let keys = common::rsa_keys();
    let signer = tower_identity_proxy::jwt::KeySigner::rs512(keys).unwrap();
    let token = tower_identity_proxy::jwt::JwtSigner::sign(
        &signer,
        &tower_identity_proxy::identity::Identity::new("Alice", ["ROLE_USER"]),
    )
    .await
    .unwrap();
    let bearer = format!("Bearer {}", token.as_str());
    let me = get_with(&url("/whoami?mode=jwt"), &[("authorization", &bearer)]).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(
        me.json(),
        json!({ "name": "Alice", "roles": ["ROLE_USER"] })
    );
    assert_eq!(get(&url("/whoami?mode=jwt")).await.status, 401);

    // The document's routes.
    let other = get_with(&url("/whoami?mode=invalid"), &[("authorization", &bearer)]).await;
    assert_eq!(other.status, 400);
    assert_eq!(get(&url("/whoami")).await.status, 404);
    assert_eq!(get(&url("/whoami?mode=")).await.status, 404);
    assert_eq!(get(&url("/whoami?mode=jwt&mode=session")).await.status, 404);
    assert_eq!(get(&url("/")).await.status, 404);
    assert_eq!(get(&url("/elsewhere")).await.status, 404);
    for path in ["/", "/whoami", "/some/path?foo=bar"] {
        let echo = request(
            "POST",
            &url(path),
            None,
            Some(json!({ "bytes": [1, 2, 3] })),
        )
        .await;
        assert_eq!(echo.status, 200, "{path}");
        assert_eq!(echo.header("x-custom-header").unwrap(), "lorem ipsum");
        assert_eq!(echo.json(), json!({ "bytes": [1, 2, 3] }));
    }
    assert_eq!(request("PUT", &url("/x"), None, None).await.status, 501);
    assert_eq!(
        request("DELETE", &url("/whoami"), None, None).await.status,
        501
    );
    // Session mode without usable forwarding headers: 403, nothing called.
    let session = get_with(&url("/whoami?mode=session"), &[("authorization", &bearer)]).await;
    assert_eq!(session.status, 403);
    let spoofed = get_with(
        &url("/whoami?mode=session"),
        &[
            ("authorization", &bearer),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "127.0.0.1:1"),
        ],
    )
    .await;
    assert_eq!(spoofed.status, 403);
    drop(target);
}

#[tokio::test]
async fn the_example_target_options_are_checked() {
    use common::example_fails;
    let err = example_fails("target", &[]).await;
    assert!(err.contains("--jwks"), "a key source is required: {err}");
    let err = example_fails("target", &["--jwks", "http://a/j", "--public-key", "k.pem"]).await;
    assert!(err.contains("cannot be used with"), "{err}");
    for alg in ["HS256", "none"] {
        let err = example_fails("target", &["--jwks", "http://a/j", "--algorithm", alg]).await;
        assert!(err.contains("--algorithm"), "{err}");
    }
    let err = example_fails(
        "target",
        &["--jwks", "ftp://a/j", "--listen", "127.0.0.1:0"],
    )
    .await;
    assert!(err.contains("ftp"), "{err}");
    let missing = [
        "--public-key",
        "/nonexistent/key.pem",
        "--listen",
        "127.0.0.1:0",
    ];
    let err = example_fails("target", &missing).await;
    assert!(err.contains("/nonexistent/key.pem"), "{err}");
}
