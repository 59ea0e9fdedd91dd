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

    // The demo runs without `--public-origin`: its tokens name no origin, so the target
    // calls back only the origin it is given.
    let jwks = app("/.well-known/jwks.json");
    let origin = app("");
    let target = Example::start(
        "target",
        &[
            "--jwks",
            &jwks,
            "--listen",
            "127.0.0.1:0",
            "--app-origin",
            &origin,
        ],
    )
    .await;
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

/// A fake "app" at a host a client names: answers any call with an admin and counts the
/// connections it gets (a target's call-back would be one).
struct FakeApp {
    addr: std::net::SocketAddr,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeApp {
    async fn start() -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&calls);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let body = r#"{"name":"admin","roles":["ROLE_ADMIN","ROLE_USER"]}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        Self { addr, calls }
    }

    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The demo on 127.0.0.1:0 with the fixture keys and `args`.
async fn demo_with_fixture_keys(args: &[&str]) -> Example {
    let keys_dir = fixture_keys_dir("demo-origin-keys");
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--keys",
        keys_dir.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let demo = Example::start("demo", &all).await;
    remove_dir(&keys_dir);
    demo
}

/// The demo (fixture keys, no security so that its admin routes need no password, the
/// given extra options) pointed at the example target (the demo's JWKS, the given extra
/// options).
async fn demo_and_example_target(demo_args: &[&str], target_args: &[&str]) -> (Example, Example) {
    let mut all = vec!["--unsecured"];
    all.extend_from_slice(demo_args);
    let demo = demo_with_fixture_keys(&all).await;
    let jwks = format!("http://{}/.well-known/jwks.json", demo.addr);
    let mut args = vec!["--jwks", &jwks, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(target_args);
    let target = Example::start("target", &args).await;
    let url = json!({ "url": format!("http://{}", target.addr) });
    let put = format!("http://{}/admin/proxy", demo.addr);
    let set = request("PUT", &put, None, Some(url)).await;
    assert_eq!(set.status, 200, "{}", set.text());
    (demo, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_target_never_calls_back_an_origin_nothing_vouches_for() {
    let fake = FakeApp::start().await;
    let fake_host = fake.addr.to_string();

    // Without public origins the demo forwards the Host the client chose: the target is
    // told the fake app's origin, and the token names none.
    let (demo, target) = demo_and_example_target(&[], &[]).await;
    let url = format!("http://{}/proxy/whoami?mode=session", demo.addr);
    let spoofed = get_with(&url, &[("host", &fake_host)]).await;
    assert_eq!(spoofed.status, 403, "{}", spoofed.text());
    // The same, straight to the target, with a valid token that names no origin.
    let headers = [
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", fake_host.as_str()),
    ];
    let direct = get_with(
        &format!("http://{}/whoami?mode=session", target.addr),
        &headers,
    )
    .await;
    assert_eq!(direct.status, 403);
    // The answers came back, and nothing called the fake app meanwhile.
    assert_eq!(
        fake.calls(),
        0,
        "the target called an unvouched origin back"
    );
    drop(demo);
    drop(target);

    // The app's origin as a public origin: the token names it, the target verifies the
    // token and calls that origin back (here the fake app stands for the app).
    let origin = format!("http://{fake_host}");
    let (demo, target) = demo_and_example_target(&["--public-origin", &origin], &[]).await;
    let url = format!("http://{}/proxy/whoami?mode=session", demo.addr);
    let vouched = get_with(&url, &[("host", &fake_host)]).await;
    assert_eq!(vouched.status, 200, "{}", vouched.text());
    assert_eq!(fake.calls(), 1);
    // Another host is not the app's: 421, the target never asked.
    let elsewhere = get_with(&url, &[("host", "attacker.example:1")]).await;
    assert_eq!(elsewhere.status, 421);
    assert_eq!(elsewhere.text(), "The request's host is not served here.");
    assert_eq!(fake.calls(), 1);
    drop(demo);
    drop(target);

    // An origin the target is configured with is called back without an `iss`.
    let (demo, target) = demo_and_example_target(&[], &["--app-origin", &origin]).await;
    let url = format!("http://{}/proxy/whoami?mode=session", demo.addr);
    assert_eq!(get_with(&url, &[("host", &fake_host)]).await.status, 200);
    assert_eq!(fake.calls(), 2);
    drop(demo);
    drop(target);
}

/// A capturing target, and the demo (fixture keys, `args`) pointed at it.
async fn demo_and_echo_target(args: &[&str]) -> (Example, common::EchoTarget) {
    let echo = common::echo_target().await;
    let url = echo.url();
    let mut all = vec!["--proxy-url", &url];
    all.extend_from_slice(args);
    let demo = demo_with_fixture_keys(&all).await;
    (demo, echo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_origins_name_the_origin_and_refuse_other_hosts() {
    let (demo, echo) = demo_and_echo_target(&[
        "--public-origin",
        "https://app.example.com",
        "--public-origin",
        "http://app.example.org:8080",
    ])
    .await;
    let url = format!("http://{}/proxy/x", demo.addr);
    for (host, proto, forwarded_host, iss) in [
        (
            "app.example.com",
            "https",
            "app.example.com",
            "https://app.example.com",
        ),
        (
            "APP.example.com:443",
            "https",
            "app.example.com",
            "https://app.example.com",
        ),
        (
            "app.example.org:8080",
            "http",
            "app.example.org:8080",
            "http://app.example.org:8080",
        ),
    ] {
        let r = get_with(&url, &[("host", host), ("x-forwarded-host", "evil")]).await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        let seen = echo.last();
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some(proto));
        assert_eq!(
            seen.header("x-forwarded-host").as_deref(),
            Some(forwarded_host)
        );
        assert_eq!(seen.claims()["iss"], iss, "{host}");
    }
    let before = echo.count();
    for host in [
        "attacker.example:1",
        "app.example.com:80",
        "app.example.org",
        &demo.addr.to_string(),
    ] {
        let r = get_with(&url, &[("host", host)]).await;
        assert_eq!(r.status, 421, "{host}");
    }
    assert_eq!(echo.count(), before, "a misdirected request was forwarded");
    drop(demo);

    // Without public origins: today's behaviour, the Host as sent, no `iss`.
    let (demo, echo) = demo_and_echo_target(&[]).await;
    let url = format!("http://{}/proxy/x", demo.addr);
    let r = get_with(&url, &[("host", "attacker.example:1")]).await;
    assert_eq!(r.status, 200);
    let seen = echo.last();
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("attacker.example:1")
    );
    assert!(seen.claims().get("iss").is_none());
    drop(demo);
}

/// A front standing for a load balancer: accepts on 127.0.0.1 and relays each connection
/// to `app` from 127.0.0.2, so that the app tells it apart from clients by address.
async fn front(app: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                let Ok(mut upstream) = socket.connect(app).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    addr
}

/// What the target was told: `X-Forwarded-Proto`, `-Host` and `-For`.
fn told(seen: &common::Seen) -> [String; 3] {
    ["x-forwarded-proto", "x-forwarded-host", "x-forwarded-for"]
        .map(|name| seen.header(name).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_count_from_a_trusted_balancer_only() {
    let (demo, echo) = demo_and_echo_target(&[
        "--trusted-proxy",
        "127.0.0.2",
        "--public-origin",
        "https://app.example.com",
    ])
    .await;
    let balancer = front(demo.addr).await;
    // What the balancer, terminating TLS for `app.example.com`, reports of its client
    // (the client's own entry on the left is never reached).
    let reported = [
        ("host", "10.0.0.5:8080"),
        ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
    ];
    let through = get_with(&format!("http://{balancer}/proxy/x"), &reported).await;
    assert_eq!(through.status, 200, "{}", through.text());
    let seen = echo.last();
    assert_eq!(told(&seen), ["https", "app.example.com", "203.0.113.7"]);
    assert_eq!(seen.claims()["iss"], "https://app.example.com");
    // RFC 7239 `Forwarded` from the balancer counts the same way.
    let forwarded = [
        ("host", "10.0.0.5:8080"),
        (
            "forwarded",
            r#"for=6.6.6.6;host=evil, for="203.0.113.8:4711";proto=https;host=app.example.com"#,
        ),
    ];
    let through = get_with(&format!("http://{balancer}/proxy/x"), &forwarded).await;
    assert_eq!(through.status, 200, "{}", through.text());
    assert_eq!(
        echo.last().header("x-forwarded-for").as_deref(),
        Some("203.0.113.8")
    );

    // The same headers straight from a client (127.0.0.1) are ignored: its Host is not the
    // app's public origin.
    let before = echo.count();
    let direct = get_with(&format!("http://{}/proxy/x", demo.addr), &reported).await;
    assert_eq!(direct.status, 421);
    assert_eq!(echo.count(), before);
    // A forwarded host that is not a public origin, even from the balancer: 421.
    let mut wrong = reported;
    wrong[3] = ("x-forwarded-host", "attacker.example");
    let r = get_with(&format!("http://{balancer}/proxy/x"), &wrong).await;
    assert_eq!(r.status, 421);
    assert_eq!(echo.count(), before);
    drop(demo);

    // Without public origins, a client's forwarded headers are simply ignored: the target
    // gets the Host it sent and its address.
    let (demo, echo) = demo_and_echo_target(&["--trusted-proxy", "127.0.0.2/32"]).await;
    let direct = get_with(&format!("http://{}/proxy/x", demo.addr), &reported).await;
    assert_eq!(direct.status, 200);
    assert_eq!(told(&echo.last()), ["http", "10.0.0.5:8080", "127.0.0.1"]);
    let balancer = front(demo.addr).await;
    let through = get_with(&format!("http://{balancer}/proxy/x"), &reported).await;
    assert_eq!(through.status, 200);
    assert_eq!(
        told(&echo.last()),
        ["https", "app.example.com", "203.0.113.7"]
    );
    drop(demo);
}

/// `--unsecured` counts no sign-ins per client address, but trusted proxies still need the
/// TCP peer's: a trusted balancer's report counts, and a direct client's address is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsecured_demo_still_knows_its_trusted_balancer() {
    let (demo, echo) =
        demo_and_echo_target(&["--unsecured", "--trusted-proxy", "127.0.0.2/32"]).await;
    let reported = [
        ("host", "10.0.0.5:8080"),
        ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
    ];
    let direct = get_with(&format!("http://{}/proxy/x", demo.addr), &reported).await;
    assert_eq!(direct.status, 200, "{}", direct.text());
    assert_eq!(told(&echo.last()), ["http", "10.0.0.5:8080", "127.0.0.1"]);
    let balancer = front(demo.addr).await;
    let through = get_with(&format!("http://{balancer}/proxy/x"), &reported).await;
    assert_eq!(through.status, 200, "{}", through.text());
    assert_eq!(
        told(&echo.last()),
        ["https", "app.example.com", "203.0.113.7"]
    );
}
