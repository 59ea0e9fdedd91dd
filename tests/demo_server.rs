//! The demo's server (`demo::serve`, what `cargo run --example demo` and `benches/load.sh`
//! run): one single-threaded runtime per server thread, each with its own listening socket
//! and connection pool to the target, all sharing the target handle and the token cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/demo.rs"]
mod demo;

mod common;

use std::{collections::HashSet, time::Duration};

use clap::Parser;
use common::{
    RSA_PKCS8_PEM, RSA_PUBLIC_PEM, bearer, echo_target, get, get_on, h2_client, remove_dir,
    temp_dir,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_thread_forwards_with_one_token_cache_and_one_target() {
    let target = echo_target().await;
    let keys = temp_dir("demo-server");
    std::fs::write(keys.join("private-key.pem"), RSA_PKCS8_PEM).unwrap();
    std::fs::write(keys.join("public-key.pem"), RSA_PUBLIC_PEM).unwrap();
    let opts = demo::Options::try_parse_from([
        "demo",
        "--keys",
        keys.to_str().unwrap(),
        "--unsecured",
        "--proxy-url",
        &target.url(),
    ])
    .unwrap();
    let built = demo::build(&opts).await.unwrap();
    let handle = built.state.handle.clone();

    let (ready, bound) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        demo::serve(&built, "127.0.0.1:0", 3, |addr| ready.send(addr).unwrap())
    });
    let addr = tokio::task::spawn_blocking(move || bound.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the server listens");

    // Three server threads, as asked.
    #[cfg(target_os = "linux")]
    {
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("demo-server-"))
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    // Each request on a new connection: the kernel spreads them over the threads' sockets.
    for i in 0..12 {
        let reply = get(&format!("http://{addr}/proxy/n/{i}?q={i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let seen = target.seen();
    assert_eq!(seen.len(), 12);
    let mut paths: Vec<String> = seen.iter().map(|s| s.uri.to_string()).collect();
    paths.sort();
    let mut want: Vec<String> = (0..12).map(|i| format!("/n/{i}?q={i}")).collect();
    want.sort();
    assert_eq!(paths, want);
    for s in &seen {
        // Verified with jsonwebtoken and the fixture's public key, RS512 pinned.
        let claims = s.claims();
        assert_eq!(claims["sub"], "anonymousUser");
        assert_eq!(
            claims["authorities"],
            serde_json::json!(["ROLE_ADMIN", "ROLE_ANONYMOUS", "ROLE_USER"])
        );
    }
    // One identity, one token, whichever thread served the request.
    let tokens: HashSet<String> = seen.iter().map(|s| bearer(&s.headers)).collect();
    assert_eq!(tokens.len(), 1);

    // The app's own routes pass through the proxy layer, over HTTP/1.1 and h2c alike.
    let jwks = get(&format!("http://{addr}/.well-known/jwks.json")).await;
    assert_eq!(jwks.status, 200, "{}", jwks.text());
    assert!(
        jwks.json()["keys"]
            .as_array()
            .is_some_and(|k| !k.is_empty())
    );
    let whoami = get(&format!("http://{addr}/api/whoami")).await;
    assert_eq!(whoami.json()["name"], "anonymousUser");
    let h2 = get_on(&h2_client(), &format!("http://{addr}/proxy/h2")).await;
    assert_eq!(h2.status, 200, "{}", h2.text());
    assert_eq!(h2.version, http::Version::HTTP_2);
    assert_eq!(target.count(), 13);

    // One target handle: disabling it disables every thread's app.
    handle.disable();
    for _ in 0..6 {
        let reply = get(&format!("http://{addr}/proxy/n")).await;
        assert_eq!(reply.status, 501);
        assert_eq!(reply.text(), "The proxy is disabled.");
    }
    assert_eq!(target.count(), 13);
    remove_dir(&keys);
}
