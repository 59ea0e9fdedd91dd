//! Several demo replicas sharing one Redis behind a round-robin balancer, over real sockets:
//! a `redis-server` started here on a free port in a temporary directory, the demo
//! (`target/<profile>/examples/demo`, built with the `redis` feature) three or four times
//! with `--redis`, and a TCP balancer
//! that sends each new connection to the next ready replica (the test's HTTP requests each
//! open a connection of their own).
//!
//! - the seed walkthrough through the balancer; a target, a user added and deleted on one
//!   replica seen by all; a token of one replica verified by every replica's JWK Set and
//!   accepted back by every replica; a loop through the balancer ends in `508`;
//! - Redis killed: forwarding goes on, changes answer `503` and change nothing; Redis
//!   restarted with its data: changes work again and every replica sees them;
//! - rotation and late replicas under load, a target verifying with PyJWT's `PyJWKClient`
//!   at its defaults (set cached 300 s, an unknown `kid` refreshes at most every 30 s):
//!   no request fails;
//! - forwarded headers (`X-Forwarded-Proto`/`-Host`) honoured from the balancer's address
//!   (`--trusted-proxy 127.0.0.2`) and ignored from a client's.
//!
//! Needs `redis-server` on the `PATH`: with `CI` set its absence fails the tests, otherwise
//! they are skipped with a line saying so. Run with `cargo build --features redis --example
//! demo && cargo test --features redis --test replicas` (a plain `cargo test --features
//! redis` builds the demo itself).

#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    Example, basic, decode_with_jwks, fetch_jwks, json_request as request, remove_dir, temp_dir,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
};

const ADMIN: (&str, &str) = ("admin", "admin-secret");

fn admin() -> String {
    basic(ADMIN.0, ADMIN.1)
}

/// A `redis-server` of the test's own, with an append-only file in a temporary directory
/// (so that a restart finds its data).
struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    /// Starts one; `None` (after saying so) if `redis-server` is missing outside CI.
    async fn start(test: &str) -> Option<Self> {
        let found = std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            let why = "redis-server is not installed (Debian: apt-get install redis-server; \
                       .ci/run installs it)";
            if std::env::var_os("CI").is_some() {
                panic!("{test}: {why}");
            }
            let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
            return None;
        }
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut redis = Self {
            port,
            dir: temp_dir(&format!("redis-{test}")),
            child: None,
        };
        redis.spawn().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs `redis-server` on the port and directory, and waits until it answers.
    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .args(["--logfile", "redis.log"])
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let port = self.port;
        common::within("redis-server answers PING", async move {
            loop {
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = s.write_all(b"PING\r\n").await;
                    let mut buf = [0u8; 7];
                    if s.read_exact(&mut buf).await.is_ok() && &buf == b"+PONG\r\n" {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Kills it (SIGKILL: no goodbye to the clients).
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        remove_dir(&self.dir);
    }
}

/// Where the balancer connects to the replicas from: another loopback address than the
/// clients', so that a replica can tell the balancer apart (`--trusted-proxy`).
const BALANCER_SOURCE: [u8; 4] = [127, 0, 0, 2];

async fn connect_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// A round-robin TCP balancer: each new connection goes to the next backend, from
/// [`BALANCER_SOURCE`].
struct Balancer {
    addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Balancer {
    async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backends = Arc::new(Mutex::new(backends));
        let list = Arc::clone(&backends);
        tokio::spawn(async move {
            let next = AtomicUsize::new(0);
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let backend = {
                    let list = list.lock().unwrap();
                    if list.is_empty() {
                        continue;
                    }
                    list[next.fetch_add(1, Ordering::Relaxed) % list.len()]
                };
                tokio::spawn(async move {
                    if let Ok(mut upstream) = connect_from(BALANCER_SOURCE, backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self { addr, backends }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn add(&self, backend: SocketAddr) {
        self.backends.lock().unwrap().push(backend);
    }
}

/// One demo replica on 127.0.0.1:0 joined to `redis`.
async fn replica(redis: &Redis, rotation_delay_secs: u64) -> Example {
    replica_with(redis, rotation_delay_secs, &[]).await
}

/// [`replica`] with more options.
async fn replica_with(redis: &Redis, rotation_delay_secs: u64, more: &[&str]) -> Example {
    let delay = rotation_delay_secs.to_string();
    let url = redis.url();
    let admin = format!("{}:{}:ROLE_ADMIN,ROLE_USER", ADMIN.0, ADMIN.1);
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--redis",
        &url,
        "--user",
        &admin,
        "--rotation-delay-secs",
        &delay,
        "--jwks-max-age-secs",
        "1",
    ];
    args.extend_from_slice(more);
    Example::start("demo", &args).await
}

/// The `kid` of the key a replica generated at start, as it says on stderr.
fn generated_kid(replica: &Example) -> String {
    let stderr = replica.stderr();
    let (_, rest) = stderr
        .split_once("generated a fresh RSA key pair (kid ")
        .unwrap_or_else(|| panic!("no generated key: {stderr}"));
    rest.split(')').next().unwrap().to_owned()
}

fn at(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// Polls `check` every 20 ms until it holds; fails the test past `cap`. Returns how long it
/// took (reported, never asserted tighter than the cap).
async fn until<F, Fut>(cap: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            let took = start.elapsed();
            eprintln!("{what}: after {took:?}");
            return took;
        }
        assert!(start.elapsed() < cap, "not within {cap:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ready(addr: SocketAddr) -> bool {
    request("GET", &at(addr, "/ready"), None, None).await.status == 200
}

async fn wait_ready(addrs: &[SocketAddr], cap: Duration) {
    for &addr in addrs {
        until(cap, &format!("replica {addr} ready"), || ready(addr)).await;
    }
}

/// How long a change may take to reach every replica before the test fails: the promise
/// is 1 s; a loaded machine gets more.
const SEEN_BY_ALL: Duration = Duration::from_secs(10);

async fn target_of(addr: SocketAddr) -> Value {
    request("GET", &at(addr, "/admin/proxy"), Some(&admin()), None)
        .await
        .json()["url"]
        .clone()
}

/// Sets the target through `via` (a replica or the balancer) and waits until every replica
/// has it; returns it as stored.
async fn set_target_everywhere(via: &str, addrs: &[SocketAddr], url: &str) -> Value {
    let set = request(
        "PUT",
        &format!("{via}/admin/proxy"),
        Some(&admin()),
        Some(json!({ "url": url })),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.text());
    let url = set.json()["url"].clone();
    until(SEEN_BY_ALL, "the target seen by every replica", || async {
        for &addr in addrs {
            if target_of(addr).await != url {
                return false;
            }
        }
        true
    })
    .await;
    url
}

/// Waits until every replica answers `/api/whoami` with `status` for `auth`.
async fn whoami_everywhere(addrs: &[SocketAddr], auth: &str, status: u16, what: &str) {
    until(SEEN_BY_ALL, what, || async {
        for &addr in addrs {
            let me = request("GET", &at(addr, "/api/whoami"), Some(auth), None).await;
            if me.status != status {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_act_as_one_proxy_behind_a_balancer() {
    let Some(redis) = Redis::start("replicas_act_as_one_proxy_behind_a_balancer").await else {
        return;
    };
    // The first replica of an empty Redis signs at once; with no delay, so do the others.
    let first = replica(&redis, 0).await;
    let (second, third) = (replica(&redis, 0).await, replica(&redis, 0).await);
    let addrs = [first.addr, second.addr, third.addr];
    wait_ready(&addrs, Duration::from_secs(30)).await;
    let lb = Balancer::start(addrs.to_vec()).await;

    // Disabled everywhere at first.
    for _ in 0..3 {
        let reply = request("GET", &lb.url("/proxy/x"), None, None).await;
        assert_eq!(reply.status, 501, "{}", reply.text());
    }

    // A target set through one replica reaches all.
    let target = common::token_target().await;
    set_target_everywhere(&lb.url(""), &addrs, &target.url()).await;

    // The seed walkthrough through the balancer: anonymous, then a user added on one.
    for _ in 0..3 {
        let reply = request("GET", &lb.url("/proxy/anonymous"), None, None).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let alice = basic("Alice", "abcdef123456");
    let added = request(
        "PUT",
        &lb.url("/admin/users/Alice"),
        Some(&admin()),
        Some(json!({ "password": "abcdef123456", "roles": ["ROLE_USER", "ROLE_WONDERLAND"] })),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.text());
    whoami_everywhere(&addrs, &alice, 200, "the user seen by every replica").await;
    for _ in 0..3 {
        let reply = request("GET", &lb.url("/proxy/alice"), Some(&alice), None).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }

    // Every token, whichever replica signed it, verifies with every replica's JWK Set and
    // is accepted back (Bearer) by every replica.
    let tokens = target.tokens();
    assert_eq!(tokens.len(), 6);
    let kids: std::collections::BTreeSet<String> = tokens.iter().map(|t| common::kid(t)).collect();
    assert_eq!(kids.len(), 3, "each replica signs with its own key");
    for addr in addrs {
        let (_, jwks) = fetch_jwks(&at(addr, "/.well-known/jwks.json")).await;
        for (i, token) in tokens.iter().enumerate() {
            let claims = decode_with_jwks(token, &jwks).unwrap();
            let sub = if i < 3 { "anonymousUser" } else { "Alice" };
            assert_eq!(claims["sub"], sub);
        }
        for token in &tokens[3..] {
            let me = request(
                "GET",
                &at(addr, "/api/whoami"),
                Some(&format!("Bearer {token}")),
                None,
            )
            .await;
            assert_eq!(me.status, 200, "{}", me.text());
            assert_eq!(me.json()["name"], "Alice");
        }
    }

    // Deleted on one, gone from all.
    let deleted = request(
        "DELETE",
        &lb.url("/admin/users/Alice"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    whoami_everywhere(&addrs, &alice, 401, "the deletion seen by every replica").await;

    // A target pointing back at the balancer: the second replica passed recognises the
    // shared pseudonym, whichever it is.
    set_target_everywhere(&lb.url(""), &addrs, &lb.url("/proxy")).await;
    let before = target.count();
    for _ in 0..3 {
        let reply = request("GET", &lb.url("/proxy/loop"), None, None).await;
        assert_eq!(reply.status, 508, "{}", reply.text());
    }
    assert_eq!(target.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_replicas_forward_and_refuse_changes_until_it_returns() {
    let Some(mut redis) = Redis::start("without_redis_replicas_forward").await else {
        return;
    };
    let first = replica(&redis, 0).await;
    let second = replica(&redis, 0).await;
    let addrs = [first.addr, second.addr];
    wait_ready(&addrs, Duration::from_secs(30)).await;
    let lb = Balancer::start(addrs.to_vec()).await;
    let target = common::token_target().await;
    let url = set_target_everywhere(&lb.url(""), &addrs, &target.url()).await;
    let (_, jwks_before) = fetch_jwks(&at(first.addr, "/.well-known/jwks.json")).await;

    redis.kill().await;

    // Forwarding, signing and verifying go on with the state last known.
    for i in 0..4 {
        let reply = request(
            "GET",
            &lb.url(&format!("/proxy/down/{i}")),
            Some(&admin()),
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let token = reply.text();
        let me = request(
            "GET",
            &lb.url("/api/whoami"),
            Some(&format!("Bearer {token}")),
            None,
        )
        .await;
        assert_eq!(me.status, 200, "{}", me.text());
    }

    // Changes are refused with a plain 503, and change nothing.
    for addr in addrs {
        let put = request(
            "PUT",
            &at(addr, "/admin/proxy"),
            Some(&admin()),
            Some(json!({ "url": "http://127.0.0.1:9/elsewhere" })),
        )
        .await;
        assert_eq!(put.status, 503, "{}", put.text());
        assert_eq!(
            put.text(),
            "The shared state cannot be reached; nothing was changed."
        );
        assert!(
            put.header("content-type")
                .is_some_and(|c| c.starts_with("text/plain"))
        );
        assert_eq!(target_of(addr).await, url);
        let user = request(
            "PUT",
            &at(addr, "/admin/users/Carol"),
            Some(&admin()),
            Some(json!({ "password": "carol-secret", "roles": ["ROLE_USER"] })),
        )
        .await;
        assert_eq!(user.status, 503, "{}", user.text());
        let carol = basic("Carol", "carol-secret");
        let me = request("GET", &at(addr, "/api/whoami"), Some(&carol), None).await;
        assert_eq!(me.status, 401);
        let gone = request(
            "DELETE",
            &at(addr, "/admin/users/admin"),
            Some(&admin()),
            None,
        )
        .await;
        assert_eq!(gone.status, 503, "{}", gone.text());
        let rotated = request(
            "POST",
            &at(addr, "/admin/keys/rotate"),
            Some(&admin()),
            None,
        )
        .await;
        assert_eq!(rotated.status, 503, "{}", rotated.text());
    }
    let (_, jwks_after) = fetch_jwks(&at(first.addr, "/.well-known/jwks.json")).await;
    assert_eq!(jwks_before.keys.len(), jwks_after.keys.len());
    assert_eq!(
        request("GET", &lb.url("/ready"), None, None).await.status,
        200
    );

    // Back with its data: changes work again within seconds, and reach every replica.
    redis.spawn().await;
    let carol = basic("Carol", "carol-secret");
    // The promise: within 5 s of Redis answering again.
    until(
        Duration::from_secs(5),
        "a change accepted again after Redis returned",
        || async {
            let put = request(
                "PUT",
                &at(first.addr, "/admin/users/Carol"),
                Some(&admin()),
                Some(json!({ "password": "carol-secret", "roles": ["ROLE_USER"] })),
            )
            .await;
            put.status == 201
        },
    )
    .await;
    whoami_everywhere(&addrs, &carol, 200, "the change seen by every replica").await;
    for addr in addrs {
        assert_eq!(target_of(addr).await, url, "the target kept in Redis");
    }
}

/// A target that verifies every request's token with PyJWT's `PyJWKClient` at its
/// defaults, and answers `200 <sub> <kid>`, or `401 <why>`.
const PYJWT_TARGET: &str = r#"
import sys, jwt
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
client = jwt.PyJWKClient(sys.argv[1])
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        try:
            token = auth.removeprefix("Bearer ")
            key = client.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=["RS512"], options={"require": ["exp", "sub"]})
            status, body = 200, f"{claims['sub']} {jwt.get_unverified_header(token)['kid']}"
        except Exception as e:
            status, body = 401, f"{type(e).__name__}: {e}"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

async fn pyjwt_target(python: &str, jwks_url: &str) -> (Child, String) {
    let mut child = Command::new(python)
        .args(["-c", PYJWT_TARGET, jwks_url])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    common::within("the PyJWT target starts", async {
        BufReader::new(stdout).read_line(&mut line).await.unwrap()
    })
    .await;
    let port: u16 = line.trim().parse().unwrap();
    (child, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_and_late_replicas_cost_no_request_with_pyjwt_defaults() {
    const TEST: &str = "rotations_and_late_replicas_cost_no_request_with_pyjwt_defaults";
    let Some(python) = common::python_with_pyjwt(TEST) else {
        return;
    };
    let Some(redis) = Redis::start("rotation").await else {
        return;
    };
    // Longer than the JWK Set's max-age (1 s here) and PyJWT's 30 s refresh cool-down.
    const DELAY: u64 = 35;
    let first = replica(&redis, DELAY).await;
    wait_ready(&[first.addr], Duration::from_secs(30)).await;
    let lb = Arc::new(Balancer::start(vec![first.addr]).await);
    let (_pyjwt, target) = pyjwt_target(&python, &lb.url("/.well-known/jwks.json")).await;
    set_target_everywhere(&lb.url(""), &[first.addr], &target).await;

    // Load: fresh identities keep coming (users added as it runs, each seen by every
    // replica before it is used), so that each key signs new tokens as soon as it is used.
    let users: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(vec!["admin".into()]));
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let mut loaders = Vec::new();
    for c in 0..3 {
        let (users, stop, outcomes, lb) =
            (users.clone(), stop.clone(), outcomes.clone(), lb.clone());
        loaders.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let name = {
                    let users = users.lock().unwrap();
                    // Mostly the newest users.
                    users[users.len().saturating_sub(1 + i % 3)].clone()
                };
                let password = if name == "admin" {
                    ADMIN.1.to_owned()
                } else {
                    format!("{name}-secret")
                };
                let reply = request(
                    "GET",
                    &lb.url("/proxy/load"),
                    Some(&basic(&name, &password)),
                    None,
                )
                .await;
                outcomes
                    .lock()
                    .unwrap()
                    .push((reply.status.as_u16(), reply.text()));
                i += 1;
            }
        }));
    }

    // A rotation on the first replica, and two replicas joining late; each joins the
    // balancer once ready, as a readiness probe makes a Kubernetes Service do.
    let rotated = request(
        "POST",
        &at(first.addr, "/admin/keys/rotate"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let new_kid = rotated.json()["kid"].as_str().unwrap().to_owned();
    assert!(rotated.json()["signs_in_seconds"].as_u64().unwrap() >= DELAY - 1);
    let late = [replica(&redis, DELAY).await, replica(&redis, DELAY).await];
    // Not ready yet: its key is not published long enough; its /proxy answers 503.
    let early = request("GET", &at(late[0].addr, "/proxy/early"), None, None).await;
    assert_eq!(early.status, 503, "{}", early.text());
    assert_eq!(early.text(), "The proxy is not ready.");
    assert_eq!(
        request("GET", &at(late[0].addr, "/ready"), None, None)
            .await
            .status,
        503
    );
    let late_kids: Vec<String> = late.iter().map(generated_kid).collect();
    let joiner = {
        let lb = lb.clone();
        let addrs: Vec<SocketAddr> = late.iter().map(|r| r.addr).collect();
        tokio::spawn(async move {
            for addr in addrs {
                until(Duration::from_secs(120), "a late replica ready", || {
                    ready(addr)
                })
                .await;
                lb.add(addr);
            }
        })
    };
    let adder = {
        let (users, stop) = (users.clone(), stop.clone());
        let all: Vec<SocketAddr> = std::iter::once(first.addr)
            .chain(late.iter().map(|r| r.addr))
            .collect();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("user{n}");
                let password = format!("{name}-secret");
                let added = request(
                    "PUT",
                    &at(all[0], &format!("/admin/users/{name}")),
                    Some(&admin()),
                    Some(json!({ "password": password, "roles": ["ROLE_USER"] })),
                )
                .await;
                assert_eq!(added.status, 201, "{}", added.text());
                let auth = basic(&name, &password);
                whoami_everywhere(&all, &auth, 200, "a new user seen by every replica").await;
                users.lock().unwrap().push(name);
                n += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    // Until each new key has signed tokens the target verified.
    let wanted: Vec<String> = std::iter::once(new_kid.clone())
        .chain(late_kids.clone())
        .collect();
    until(
        Duration::from_secs(150),
        "every new key used and verified",
        || {
            let outcomes = outcomes.clone();
            let wanted = wanted.clone();
            async move {
                let outcomes = outcomes.lock().unwrap();
                wanted.iter().all(|kid| {
                    outcomes
                        .iter()
                        .filter(|(status, body)| *status == 200 && body.ends_with(kid.as_str()))
                        .count()
                        >= 3
                })
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for loader in loaders {
        loader.await.unwrap();
    }
    adder.await.unwrap();
    joiner.await.unwrap();
    let outcomes = outcomes.lock().unwrap();
    let failed: Vec<&(u16, String)> = outcomes.iter().filter(|(s, _)| *s != 200).collect();
    eprintln!(
        "{} requests through the balancer, {} failed",
        outcomes.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(5)]
    );
    // The late replicas, signing, never used a kid the target did not verify.
    drop(late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_count_from_the_balancer_only() {
    let Some(redis) = Redis::start("forwarded_headers").await else {
        return;
    };
    // The balancer reaches the replica from 127.0.0.2; clients come from 127.0.0.1.
    let replica = replica_with(&redis, 0, &["--trusted-proxy", "127.0.0.2"]).await;
    let addrs = [replica.addr];
    wait_ready(&addrs, Duration::from_secs(30)).await;
    let lb = Balancer::start(addrs.to_vec()).await;
    let target = common::echo_target().await;
    set_target_everywhere(&lb.url(""), &addrs, &target.url()).await;
    // What a balancer terminating TLS for https://app.example.com adds.
    let origin = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
    ];

    let reply = common::get_with(&lb.url("/proxy/origin"), &origin).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = target.last();
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("app.example.com")
    );

    // The same headers from a client that reaches the replica itself: ignored.
    let reply = common::get_with(&at(replica.addr, "/proxy/origin"), &origin).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = target.last();
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(replica.addr.to_string())
    );
}
