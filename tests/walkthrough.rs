//! The walkthrough of the Atoti proxy documentation, step by step and assertion by
//! assertion, against the demo app (`examples/demo.rs`, included below and run in-process on
//! real sockets) and a target server that behaves as the document's Python server:
//!
//! - `GET /whoami?mode=jwt`: verifies the JWT with the app's public key (jsonwebtoken, RS512
//!   pinned) and answers `{"name", "roles"}`;
//! - `GET /whoami?mode=session`: rebuilds the app's URL from `X-Forwarded-Proto` and
//!   `X-Forwarded-Host`, calls the app's `/api/whoami` with the token it received, and
//!   answers `403` when that call is not `200`;
//! - another mode: `400`; another path: `404`;
//! - `POST`: echoes the body, with `X-Custom-Header: lorem ipsum`.
//!
//! The walkthrough runs a second time with `examples/target.rs` (included below too) as the
//! local server: the Rust twin of the document's server, verifying the JWT with
//! `VerifyProxyJwtLayer` and the demo's JWKS (`/.well-known/jwks.json`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/demo.rs"]
mod demo;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/target.rs"]
mod target;

mod common;

use axum::{
    Router,
    body::Bytes,
    extract::Query,
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use clap::Parser;
use common::{
    RSA_PKCS1_PEM, RSA_PUBLIC_PEM, Reply, basic, empty, full, get as http_get, get_with,
    random_bytes, remove_dir, send, serve, temp_dir,
};
use serde_json::{Value, json};

/// The document's `get_user`: check the signature, return the name and roles claims.
fn get_user(jwt: &str) -> Option<(String, Vec<String>)> {
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(RSA_PUBLIC_PEM.as_bytes()).ok()?;
    let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS512);
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .ok()?
        .claims;
    let name = claims["sub"].as_str()?.to_owned();
    let roles = claims["authorities"]
        .as_array()?
        .iter()
        .map(|r| r.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()?;
    Some((name, roles))
}

fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// `do_GET` of the document's `RequestHandler`.
async fn whoami(headers: HeaderMap, Query(params): Query<Vec<(String, String)>>) -> Response {
    let modes: Vec<&String> = params
        .iter()
        .filter(|(k, _)| k == "mode")
        .map(|(_, v)| v)
        .collect();
    let [mode] = modes.as_slice() else {
        return status(StatusCode::NOT_FOUND);
    };
    let Some(authorization) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let Some((token_type, jwt)) = authorization.split_once(' ') else {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let (name, roles) = match mode.as_str() {
        "jwt" => match get_user(jwt) {
            Some(user) => user,
            // The document's server would fail here: a token that does not verify.
            None => return status(StatusCode::UNAUTHORIZED),
        },
        "session" => {
            // The target does not know the app's URL: it rebuilds it from the headers.
            let forwarded = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let (Some(proto), Some(host)) = (
                forwarded("x-forwarded-proto"),
                forwarded("x-forwarded-host"),
            ) else {
                return status(StatusCode::FORBIDDEN);
            };
            let session_url = format!("{proto}://{host}");
            let reply = common::try_send(
                http::Request::get(format!("{session_url}/api/whoami"))
                    .header(header::AUTHORIZATION, format!("{token_type} {jwt}"))
                    .body(empty())
                    .unwrap(),
            )
            .await;
            match reply {
                Ok(r) if r.status == StatusCode::OK => {
                    let user = r.json();
                    let mut roles: Vec<String> = user["roles"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|r| r.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    roles.sort();
                    (user["name"].as_str().unwrap_or_default().to_owned(), roles)
                }
                _ => return status(StatusCode::FORBIDDEN),
            }
        }
        _ => return status(StatusCode::BAD_REQUEST),
    };
    let body = json!({ "name": name, "roles": roles }).to_string();
    (StatusCode::OK, body).into_response()
}

/// `do_POST`: the body back, with a custom header.
async fn echo(body: Bytes) -> Response {
    ([("x-custom-header", "lorem ipsum")], body).into_response()
}

/// Any other path: `do_GET` answers `404`, `do_POST` echoes, other methods are not
/// implemented (as Python's `BaseHTTPRequestHandler`).
async fn elsewhere(method: Method, body: Bytes) -> Response {
    match method {
        Method::GET => status(StatusCode::NOT_FOUND),
        Method::POST => echo(body).await,
        _ => status(StatusCode::NOT_IMPLEMENTED),
    }
}

/// The document's local server.
fn local_server() -> Router {
    Router::new()
        .route("/whoami", get(whoami).post(echo))
        .fallback(elsewhere)
}

fn options(args: &[&str]) -> demo::Options {
    let mut all = vec!["demo", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    demo::Options::try_parse_from(all).expect("valid demo options")
}

async fn admin_put(url: &str, auth: Option<&str>, body: Value) -> Reply {
    let mut b = http::Request::put(url).header(header::CONTENT_TYPE, "application/json");
    if let Some(a) = auth {
        b = b.header(header::AUTHORIZATION, a);
    }
    send(b.body(full(body.to_string())).unwrap()).await
}

/// The walkthrough's local server.
enum Local {
    /// This test's own server, [`local_server`].
    Own(common::Server),
    /// `examples/target.rs`, verifying with the secured demo's JWKS.
    Example(target::Running),
}

impl Local {
    async fn start(example: bool, app: std::net::SocketAddr) -> Self {
        if !example {
            return Self::Own(serve(local_server()).await);
        }
        let jwks = format!("http://{app}/.well-known/jwks.json");
        let opts =
            target::Options::try_parse_from(["target", "--jwks", &jwks, "--listen", "127.0.0.1:0"])
                .expect("valid target options");
        Self::Example(
            target::start(&opts)
                .await
                .expect("the example target starts"),
        )
    }

    fn port(&self) -> u16 {
        match self {
            Self::Own(server) => server.addr.port(),
            Self::Example(running) => running.addr.port(),
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Self::Example(running) = self {
            running.task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_walkthrough() {
    walkthrough(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_walkthrough_with_the_example_target() {
    walkthrough(true).await;
}

async fn walkthrough(example_target: bool) {
    // "Using a custom JWT key pair": written to a directory the demo reads with --keys
    // (the private key in PKCS#1 form, as `openssl genrsa -traditional` writes it).
    let keys_dir = temp_dir("walkthrough-keys");
    std::fs::write(keys_dir.join("private-key.pem"), RSA_PKCS1_PEM).unwrap();
    std::fs::write(keys_dir.join("public-key.pem"), RSA_PUBLIC_PEM).unwrap();
    let admin = basic("admin", "admin-secret");

    // "Starting a secured session".
    let secured = demo::start(&options(&[
        "--keys",
        keys_dir.to_str().unwrap(),
        "--user",
        "admin:admin-secret:ROLE_ADMIN",
    ]))
    .await
    .expect("the secured demo starts");
    remove_dir(&keys_dir);
    let app = |path: &str| format!("http://{}{path}", secured.addr);

    // "The proxy is disabled by default".
    let url = get_with(&app("/admin/proxy"), &[("authorization", &admin)]).await;
    assert_eq!(url.status, 200);
    assert_eq!(url.json(), json!({ "url": null }));
    let response = http_get(&app("/proxy")).await;
    assert_eq!(response.status, 501);
    assert_eq!(response.text(), "The proxy is disabled.");

    // "Starting a local server".
    let local = Local::start(example_target, secured.addr).await;
    let port = local.port();

    // "Configuring the proxy to forward requests to the local server".
    let target = format!("http://localhost:{port}");
    let set = admin_put(&app("/admin/proxy"), Some(&admin), json!({ "url": target })).await;
    assert_eq!(set.status, 200, "{}", set.text());
    let url = get_with(&app("/admin/proxy"), &[("authorization", &admin)]).await;
    assert_eq!(url.json(), json!({ "url": target }));

    // "Calling the proxy without authentication".
    let response = http_get(&app("/proxy/whoami?mode=jwt")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({ "name": "anonymousUser", "roles": ["ROLE_ANONYMOUS"] })
    );

    // "Without authentication, ROLE_USER is missing".
    let response = http_get(&app("/proxy/whoami?mode=session")).await;
    assert_eq!(response.status, 403);

    // "Adding a user to the session and calling the proxy as this user".
    let (username, password) = ("Alice", "abcdef123456");
    let added = admin_put(
        &app(&format!("/admin/users/{username}")),
        Some(&admin),
        json!({ "password": password, "roles": ["ROLE_WONDERLAND", "ROLE_USER"] }),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.text());
    let alice = basic(username, password);
    let response = get_with(&app("/proxy/whoami?mode=jwt"), &[("authorization", &alice)]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({ "name": "Alice", "roles": ["ROLE_USER", "ROLE_WONDERLAND"] })
    );

    // "ROLE_USER is present so atoti.Session.connect() ... will succeed".
    let response = get_with(
        &app("/proxy/whoami?mode=session"),
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({ "name": "Alice", "roles": ["ROLE_USER", "ROLE_WONDERLAND"] })
    );

    // "Trying an unsupported mode".
    let response = http_get(&app("/proxy/whoami?mode=invalid")).await;
    assert_eq!(response.status, 400);

    // "Trying an unhandled path".
    let response = http_get(&app("/proxy")).await;
    assert_eq!(response.status, 404);

    // "Request and response bodies are not limited to strings" (token_bytes(): 32 bytes).
    let bytes = random_bytes(32);
    let response = send(
        http::Request::post(app("/proxy"))
            .body(full(bytes.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200);
    let length: usize = response.header("content-length").unwrap().parse().unwrap();
    assert_eq!(length, bytes.len());
    assert_eq!(response.body.as_ref(), bytes.as_slice());
    assert_eq!(response.header("x-custom-header").unwrap(), "lorem ipsum");

    // "Disabling the proxy".
    let set = admin_put(&app("/admin/proxy"), Some(&admin), json!({ "url": null })).await;
    assert_eq!(set.status, 200);
    assert_eq!(set.json(), json!({ "url": null }));
    assert_eq!(http_get(&app("/proxy")).await.status, 501);

    // "On a session without security, atoti.Session.connect() always succeeds".
    let unsecured = demo::start(&options(&["--unsecured"]))
        .await
        .expect("the unsecured demo starts");
    let open = |path: &str| format!("http://{}{path}", unsecured.addr);
    let url = http_get(&open("/admin/proxy")).await;
    assert_eq!(url.json(), json!({ "url": null }));
    let set = admin_put(&open("/admin/proxy"), None, json!({ "url": target })).await;
    assert_eq!(set.status, 200, "{}", set.text());
    let response = http_get(&open("/proxy/whoami?mode=session")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({
            "name": "anonymousUser",
            "roles": ["ROLE_ADMIN", "ROLE_ANONYMOUS", "ROLE_USER"]
        })
    );

    // "Stopping the local server": the proxy now answers 502.
    drop(local);
    assert_eq!(http_get(&open("/proxy/whoami?mode=jwt")).await.status, 502);
    secured.task.abort();
    unsecured.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_routes() {
    let keys_dir = temp_dir("routes-keys");
    std::fs::write(keys_dir.join("private-key.pem"), common::RSA_PKCS8_PEM).unwrap();
    std::fs::write(keys_dir.join("public-key.pem"), RSA_PUBLIC_PEM).unwrap();
    let target = common::echo_target().await;
    let running = demo::start(&options(&[
        "--keys",
        keys_dir.to_str().unwrap(),
        "--user",
        "root:pw:with:colons:ROLE_ADMIN,ROLE_USER",
        "--user",
        "bob:bob-pw:ROLE_USER",
        "--proxy-url",
        &target.url(),
        "--upstream-timeout-ms",
        "300",
    ]))
    .await
    .unwrap();
    remove_dir(&keys_dir);
    let app = |path: &str| format!("http://{}{path}", running.addr);
    let root = basic("root", "pw:with:colons");
    let bob = basic("bob", "bob-pw");

    // --proxy-url set the initial target.
    let url = get_with(&app("/admin/proxy"), &[("authorization", &root)]).await;
    assert_eq!(url.json(), json!({ "url": target.url() }));

    // /api/whoami: ROLE_USER needed, 401 for bad credentials, Bearer tokens of this app.
    let me = get_with(&app("/api/whoami"), &[("authorization", &bob)]).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json(), json!({ "name": "bob", "roles": ["ROLE_USER"] }));
    assert_eq!(http_get(&app("/api/whoami")).await.status, 403);
    let wrong = get_with(
        &app("/api/whoami"),
        &[("authorization", &basic("bob", "nope"))],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    let forged = get_with(
        &app("/api/whoami"),
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(forged.status, 401);
    assert!(
        forged
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );

    // The token the target receives identifies bob and is accepted back by the app.
    let through = get_with(&app("/proxy/anything"), &[("authorization", &bob)]).await;
    assert_eq!(through.status, 200);
    let seen = target.last();
    assert_eq!(seen.claims()["sub"], "bob");
    let token = common::bearer(&seen.headers);
    let back = get_with(
        &app("/api/whoami"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(
        back.json(),
        json!({ "name": "bob", "roles": ["ROLE_USER"] })
    );

    // --upstream-timeout-ms: a slow target is a 504.
    let slow = get_with(&app("/proxy/slow"), &[("x-echo-delay-ms", "3000")]).await;
    assert_eq!(slow.status, 504);

    // /admin needs ROLE_ADMIN.
    let denied = get_with(&app("/admin/proxy"), &[("authorization", &bob)]).await;
    assert_eq!(denied.status, 403);
    let denied = admin_put(&app("/admin/proxy"), None, json!({ "url": null })).await;
    assert_eq!(denied.status, 403);
    assert_eq!(target.count(), 2);

    // An invalid URL is refused with its reason; the previous target stays.
    let bad = admin_put(
        &app("/admin/proxy"),
        Some(&root),
        json!({ "url": "ftp://example.com" }),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("scheme"), "{}", bad.text());
    let url = get_with(&app("/admin/proxy"), &[("authorization", &root)]).await;
    assert_eq!(url.json(), json!({ "url": target.url() }));

    // Users: update (200), use, delete (204), gone (401), delete again (404).
    let updated = admin_put(
        &app("/admin/users/bob"),
        Some(&root),
        json!({ "password": "new-pw", "roles": ["ROLE_USER", "ROLE_B", "ROLE_USER"] }),
    )
    .await;
    assert_eq!(updated.status, 200);
    assert_eq!(
        updated.json(),
        json!({ "name": "bob", "roles": ["ROLE_B", "ROLE_USER"] })
    );
    assert_eq!(
        get_with(&app("/api/whoami"), &[("authorization", &bob)])
            .await
            .status,
        401
    );
    let bob2 = basic("bob", "new-pw");
    let me = get_with(&app("/api/whoami"), &[("authorization", &bob2)]).await;
    assert_eq!(me.json()["roles"], json!(["ROLE_B", "ROLE_USER"]));
    let bad_name = admin_put(
        &app("/admin/users/a:b"),
        Some(&root),
        json!({ "password": "x", "roles": [] }),
    )
    .await;
    assert_eq!(bad_name.status, 400);
    let del = |auth: String| {
        let url = app("/admin/users/bob");
        async move {
            send(
                http::Request::delete(url)
                    .header("authorization", auth)
                    .body(empty())
                    .unwrap(),
            )
            .await
        }
    };
    assert_eq!(del(bob2.clone()).await.status, 403);
    assert_eq!(del(root.clone()).await.status, 204);
    assert_eq!(
        get_with(&app("/api/whoami"), &[("authorization", &bob2)])
            .await
            .status,
        401
    );
    assert_eq!(del(root.clone()).await.status, 404);
    running.task.abort();
}

#[tokio::test]
async fn demo_options_are_checked() {
    let parse = |args: &[&str]| {
        let mut all = vec!["demo"];
        all.extend_from_slice(args);
        demo::Options::try_parse_from(all)
    };
    let defaults = parse(&[]).unwrap();
    assert_eq!(defaults.listen, "127.0.0.1:8080");
    assert!(defaults.keys.is_none() && !defaults.unsecured && defaults.proxy_url.is_none());
    assert!(parse(&["--user", "no-roles"]).is_err());
    assert!(parse(&["--upstream-timeout-ms", "soon"]).is_err());
    let two = parse(&["--user", "a:p:R1,R2", "--user", "b:q:"]).unwrap();
    assert_eq!(two.users[0].roles, ["R1", "R2"]);
    assert!(two.users[1].roles.is_empty());
    assert!(!format!("{:?}", two.users[0]).contains("\"p\""));

    // Wrong --keys and --proxy-url are start-up errors, not panics.
    let missing = temp_dir("missing-keys");
    let err = demo::build(&options(&["--keys", missing.to_str().unwrap()]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("private-key.pem"), "{err}");
    std::fs::write(missing.join("private-key.pem"), common::OTHER_RSA_PKCS8_PEM).unwrap();
    std::fs::write(missing.join("public-key.pem"), RSA_PUBLIC_PEM).unwrap();
    let err = demo::build(&options(&["--keys", missing.to_str().unwrap()]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    remove_dir(&missing);
    let keys_dir = temp_dir("opts-keys");
    std::fs::write(keys_dir.join("private-key.pem"), RSA_PKCS1_PEM).unwrap();
    std::fs::write(keys_dir.join("public-key.pem"), RSA_PUBLIC_PEM).unwrap();
    let err = demo::build(&options(&[
        "--keys",
        keys_dir.to_str().unwrap(),
        "--proxy-url",
        "http://h/?q=1",
    ]))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("query"), "{err}");
    remove_dir(&keys_dir);
}
