//! The walkthrough of the Atoti proxy documentation, step by step and assertion by
//! assertion, against the demo app (`examples/demo/`, run as its binary on real sockets) and a target server that behaves as the document's Python server, down to
//! the bytes it writes: Python's `BaseHTTPRequestHandler` answers in HTTP/1.0 with
//! `send_response_only` (a status line, no `Date`, no `Content-Length`) and closes the
//! connection to end the body.
//!
//! - `GET /whoami?mode=jwt`: verifies the JWT with the app's public key (jsonwebtoken, RS512
//!   pinned) and answers `{"name", "roles"}`;
//! - `GET /whoami?mode=session`: rebuilds the app's URL from `X-Forwarded-Proto` and
//!   `X-Forwarded-Host`, calls the app's `/api/whoami` with the token it received, and
//!   answers `403` when that call is not `200`;
//! - another mode: `400`; another path: `404`;
//! - `POST`: echoes the body (read by its `Content-Length`), with
//!   `X-Custom-Header: lorem ipsum`.
//!
//! The walkthrough runs a second time with `examples/target.rs` (its binary too) as the
//! local server: the Rust twin of the document's server, verifying the JWT with
//! `VerifyProxyJwtLayer` and the demo's JWKS (`/.well-known/jwks.json`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use axum::{extract::Query, http::header};
use common::{
    Example, RSA_PKCS1_PEM, RSA_PUBLIC_PEM, Reply, basic, empty, full, get as http_get, get_with,
    random_bytes, remove_dir, send, temp_dir,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

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

/// What a handler writes: status, extra headers, body. `None`: the handler failed (Python
/// would log the exception and close the connection without an answer).
type Answer = Option<(u16, Vec<(&'static str, String)>, Vec<u8>)>;

fn status_only(code: u16) -> Answer {
    Some((code, Vec::new(), Vec::new()))
}

/// A request as `BaseHTTPRequestHandler` parses it.
struct PyRequest {
    method: String,
    path: String,
    /// Lower-cased names (Python's `self.headers[...]` is case-insensitive).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl PyRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `do_GET` of the document's `RequestHandler`.
async fn do_get(req: &PyRequest) -> Answer {
    let uri: http::Uri = req.path.parse().ok()?;
    // `parse_qs` drops blank values; `{"mode": [mode]}` needs exactly one `mode`.
    let params = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let modes: Vec<&String> = params
        .iter()
        .filter(|(k, v)| k == "mode" && !v.is_empty())
        .map(|(_, v)| v)
        .collect();
    let (true, [mode]) = (uri.path() == "/whoami", modes.as_slice()) else {
        return status_only(404);
    };
    let (token_type, jwt) = req.header("authorization")?.split_once(' ')?;
    let (name, roles) = match mode.as_str() {
        "jwt" => get_user(jwt)?,
        "session" => {
            // The server rebuilds the session URL from the headers passed by the proxy.
            let protocol = req.header("x-forwarded-proto")?;
            let host = req.header("x-forwarded-host")?;
            let session_url = format!("{protocol}://{host}");
            let reply = common::try_send(
                http::Request::get(format!("{session_url}/api/whoami"))
                    .header(header::AUTHORIZATION, format!("{token_type} {jwt}"))
                    .body(empty())
                    .unwrap(),
            )
            .await;
            match reply {
                Ok(r) if r.status == 200 => {
                    let user = r.json();
                    let mut roles: Vec<String> =
                        serde_json::from_value(user["roles"].clone()).ok()?;
                    roles.sort();
                    (user["name"].as_str()?.to_owned(), roles)
                }
                _ => return status_only(403),
            }
        }
        _ => return status_only(400),
    };
    let body = serde_json::to_vec(&json!({ "name": name, "roles": roles })).ok()?;
    Some((200, Vec::new(), body))
}

/// `do_POST`: the body back, with a custom header.
fn do_post(req: &PyRequest) -> Answer {
    Some((
        200,
        vec![("X-Custom-Header", "lorem ipsum".to_owned())],
        req.body.clone(),
    ))
}

/// One connection, one request, as `BaseHTTPRequestHandler` with HTTP/1.0.
async fn handle(stream: TcpStream) -> Option<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.ok()?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (k, v) = trimmed.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut req = PyRequest {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let answer = match req.method.as_str() {
        "GET" => do_get(&req).await,
        "POST" => {
            // `int(self.headers["Content-Length"])`: fails without one.
            let length: usize = req.header("content-length")?.parse().ok()?;
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await.ok()?;
            req.body = body;
            do_post(&req)
        }
        _ => status_only(501),
    };
    let mut stream = reader.into_inner();
    let (code, extra, body) = answer?;
    let reason = http::StatusCode::from_u16(code)
        .ok()?
        .canonical_reason()
        .unwrap_or("");
    let mut out = format!("HTTP/1.0 {code} {reason}\r\n");
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    stream.write_all(&bytes).await.ok()?;
    stream.shutdown().await.ok()
}

/// The document's `local_server`, on 127.0.0.1:0; stops when dropped.
struct LocalServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl LocalServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(handle(stream));
            }
        });
        Self { addr, task }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The demo's command line: `args` on 127.0.0.1, port 0.
fn options<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    all
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
    /// This test's own server, [`LocalServer`].
    Own(LocalServer),
    /// `examples/target.rs`, verifying with the secured demo's JWKS.
    Example(Example),
}

impl Local {
    /// The JWKS comes from `app`; `mode=session` calls back the `apps` (the demos run
    /// without `--public-origin`, as the document's walkthrough, so their tokens name no
    /// origin: the example target calls back only the origins it is given).
    async fn start(example: bool, app: SocketAddr, apps: &[SocketAddr]) -> Self {
        if !example {
            return Self::Own(LocalServer::start().await);
        }
        let jwks = format!("http://{app}/.well-known/jwks.json");
        let mut args = vec!["--jwks", &jwks, "--listen", "127.0.0.1:0"];
        let origins: Vec<String> = apps.iter().map(|app| format!("http://{app}")).collect();
        for origin in &origins {
            args.extend(["--app-origin", origin]);
        }
        Self::Example(Example::start("target", &args).await)
    }

    fn port(&self) -> u16 {
        match self {
            Self::Own(server) => server.addr.port(),
            Self::Example(running) => running.addr.port(),
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
    let secured = Example::start(
        "demo",
        &options(&[
            "--keys",
            keys_dir.to_str().unwrap(),
            "--user",
            "admin:admin-secret:ROLE_ADMIN",
        ]),
    )
    .await;
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
    // (The unsecured session of the document's last step runs beside it.)
    let unsecured = Example::start("demo", &options(&["--unsecured"])).await;
    let local = Local::start(
        example_target,
        secured.addr,
        &[secured.addr, unsecured.addr],
    )
    .await;
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
    drop(secured);
    drop(unsecured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_routes() {
    let keys_dir = common::fixture_keys_dir("routes-keys");
    let target = common::echo_target().await;
    let running = Example::start(
        "demo",
        &options(&[
            "--keys",
            keys_dir.to_str().unwrap(),
            "--user",
            "root:pw:with:colons:ROLE_ADMIN,ROLE_USER",
            "--user",
            "bob:bob-pw:ROLE_USER",
            "--proxy-url",
            &target.url(),
            // Every request proxied in this test must beat it: a 300 ms timeout made a stall of
            // the loaded test machine a 504.
            "--upstream-timeout-ms",
            "2000",
        ]),
    )
    .await;
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

    // --upstream-timeout-ms: a slow target is a 504. It answers a minute later, after any
    // wait of the suite: only the timeout can answer first, however slow the machine.
    let slow = get_with(&app("/proxy/slow"), &[("x-echo-delay-ms", "60000")]).await;
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
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_options_are_checked() {
    // Refused by the command line: the demo exits with clap's message.
    let err = common::example_fails("demo", &["--user", "no-roles"]).await;
    assert!(err.contains("NAME:PASSWORD:ROLE,ROLE"), "{err}");
    let err = common::example_fails("demo", &["--upstream-timeout-ms", "soon"]).await;
    assert!(err.contains("--upstream-timeout-ms"), "{err}");

    // Wrong --keys and --proxy-url are start-up errors, not panics.
    let missing = temp_dir("missing-keys");
    let keys = missing.to_str().unwrap();
    let err = common::example_fails("demo", &options(&["--keys", keys])).await;
    assert!(err.contains("private-key.pem"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    std::fs::write(missing.join("private-key.pem"), common::OTHER_RSA_PKCS8_PEM).unwrap();
    std::fs::write(missing.join("public-key.pem"), RSA_PUBLIC_PEM).unwrap();
    let err = common::example_fails("demo", &options(&["--keys", keys])).await;
    assert!(err.contains("does not match"), "{err}");
    remove_dir(&missing);
    let keys_dir = temp_dir("opts-keys");
    std::fs::write(keys_dir.join("private-key.pem"), RSA_PKCS1_PEM).unwrap();
    std::fs::write(keys_dir.join("public-key.pem"), RSA_PUBLIC_PEM).unwrap();
    let keys = keys_dir.to_str().unwrap();
    let err = common::example_fails(
        "demo",
        &options(&["--keys", keys, "--proxy-url", "http://h/?q=1"]),
    )
    .await;
    assert!(err.contains("query"), "{err}");

    // `--user NAME:PASSWORD:ROLES` (roles sorted, possibly none); the password is never
    // written to the log.
    let demo = Example::start(
        "demo",
        &options(&[
            "--keys",
            keys,
            "--user",
            "a:p-secret:ROLE_USER,R2",
            "--user",
            "b:q-secret:",
        ]),
    )
    .await;
    remove_dir(&keys_dir);
    let whoami = demo.url("/api/whoami");
    let a = get_with(&whoami, &[("authorization", &basic("a", "p-secret"))]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json(),
        json!({ "name": "a", "roles": ["R2", "ROLE_USER"] })
    );
    let b = get_with(&whoami, &[("authorization", &basic("b", "q-secret"))]).await;
    assert_eq!(b.status, 403, "{}", b.text());
    assert!(!demo.stderr().contains("-secret"), "{}", demo.stderr());
}

/// The document's server ends its bodies by closing the connection: small ones reach the
/// client with a `Content-Length` (read ahead, as the doc asserts), large ones stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_bodies_of_any_size() {
    let local = LocalServer::start().await;
    let running = Example::start(
        "demo",
        &options(&[
            "--unsecured",
            "--proxy-url",
            &format!("http://127.0.0.1:{}", local.addr.port()),
        ]),
    )
    .await;
    let url = format!("http://{}/proxy/upload", running.addr);
    for size in [0, 1, 32, 64 * 1024, 64 * 1024 + 1, 1024 * 1024] {
        let bytes = random_bytes(size);
        // As httpx does, an explicit `Content-Length` (the server needs one), even for 0.
        let response = send(
            http::Request::post(&url)
                .header("content-length", size)
                .body(full(bytes.clone()))
                .unwrap(),
        )
        .await;
        assert_eq!(response.status, 200, "{size}");
        assert!(response.body == bytes, "{size}: the bytes came back");
        assert_eq!(response.header("x-custom-header").unwrap(), "lorem ipsum");
        if size <= 64 * 1024 {
            assert_eq!(response.header("content-length"), Some(size.to_string()));
        } else {
            assert_eq!(response.header("transfer-encoding").unwrap(), "chunked");
        }
    }
    drop(running);
}

/// `demo --listen 127.0.0.1:0` prints `listening on http://ADDR` first, once it answers
/// (`Example::start` reads that line); a port that cannot be bound is an error.
#[tokio::test]
async fn the_demo_says_where_it_listens_first() {
    let keys_dir = common::fixture_keys_dir("listen-keys");
    let keys = keys_dir.to_str().unwrap();
    let demo = Example::start("demo", &options(&["--keys", keys, "--unsecured"])).await;
    assert_eq!(demo.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(demo.addr.port(), 0);
    let response = http_get(&demo.url("/proxy")).await;
    assert_eq!(response.status, 501);
    assert_eq!(response.text(), "The proxy is disabled.");
    drop(demo);
    // A port that cannot be bound is an error, not a panic.
    let busy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = busy.local_addr().unwrap().to_string();
    let err = common::example_fails("demo", &["--keys", keys, "--listen", &taken]).await;
    assert!(err.contains("cannot listen"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    remove_dir(&keys_dir);
}
