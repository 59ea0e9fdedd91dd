//! Authenticated callers of the demo (run as its binary, on real sockets): call-back tokens
//! follow the user store, and a flood of wrong passwords is limited while a signed-in user
//! is served.

mod common;

use std::time::Instant;

use common::{Example, Reply, basic, remove_dir, token_target};
use serde_json::{Value, json};

async fn request(method: &str, url: &str, auth: Option<&str>, body: Option<Value>) -> Reply {
    common::json_request(method, url, auth, body).await
}

async fn start(users: &[&str]) -> Example {
    let keys_dir = common::fixture_keys_dir("authn-keys");
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--keys",
        keys_dir.to_str().unwrap(),
    ];
    for user in users {
        args.extend(["--user", user]);
    }
    let demo = Example::start("demo", &args).await;
    remove_dir(&keys_dir);
    demo
}

/// A removed admin's token (which every target receives) is refused on `/api/whoami`, on
/// `/admin/*` and on `/proxy` at the very next request; so is the token of a user added
/// again with other roles. Before that, the token never reached `/admin/*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_back_tokens_follow_the_user_store() {
    let demo = start(&[
        "root:root-secret:ROLE_ADMIN,ROLE_USER",
        "admin:admin-secret:ROLE_ADMIN,ROLE_USER",
    ])
    .await;
    let app = |path: &str| format!("http://{}{path}", demo.addr);
    let root = basic("root", "root-secret");
    let recorder = token_target().await;
    let put = |path: &str, auth: &str, body: Value| {
        let (url, auth) = (app(path), auth.to_owned());
        async move { request("PUT", &url, Some(&auth), Some(body)).await }
    };
    let set = put("/admin/proxy", &root, json!({ "url": recorder.url() })).await;
    assert_eq!(set.status, 200, "{}", set.text());

    // The admin goes through the proxy: the target receives the admin's token.
    let admin = basic("admin", "admin-secret");
    assert_eq!(
        request("GET", &app("/proxy/x"), Some(&admin), None)
            .await
            .status,
        200
    );
    let token = format!("Bearer {}", recorder.tokens().pop().unwrap());

    // The token calls the app back as the admin...
    let whoami = request("GET", &app("/api/whoami"), Some(&token), None).await;
    assert_eq!(whoami.status, 200, "{}", whoami.text());
    assert_eq!(whoami.json()["name"], "admin");
    // ...but never administers it: no admin route takes it.
    let made = put(
        "/admin/users/bob2",
        &token,
        json!({ "password": "x", "roles": ["ROLE_ADMIN"] }),
    )
    .await;
    assert_eq!(made.status, 403, "{}", made.text());
    assert_eq!(
        request("GET", &app("/admin/proxy"), Some(&token), None)
            .await
            .status,
        403
    );
    let rotate = request("POST", &app("/admin/keys/rotate"), Some(&token), None).await;
    assert_eq!(rotate.status, 403);
    assert_eq!(
        request("GET", &app("/admin/proxy"), Some(&admin), None)
            .await
            .status,
        200
    );

    // Removed: the very next request with the token is refused, on every route.
    let removed = request("DELETE", &app("/admin/users/admin"), Some(&root), None).await;
    assert_eq!(removed.status, 204);
    for (method, path) in [
        ("GET", "/api/whoami"),
        ("GET", "/admin/proxy"),
        ("PUT", "/admin/users/bob2"),
        ("GET", "/proxy/x"),
    ] {
        let body = (method == "PUT").then(|| json!({ "password": "x", "roles": [] }));
        let r = request(method, &app(path), Some(&token), body).await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
        assert_eq!(
            r.header("www-authenticate").unwrap(),
            r#"Bearer error="invalid_token""#
        );
    }
    assert_eq!(
        request("GET", &app("/api/whoami"), Some(&admin), None)
            .await
            .status,
        401
    );

    // Added again with other roles: the old token stays refused; the new password works.
    let back = put(
        "/admin/users/admin",
        &root,
        json!({ "password": "new-secret", "roles": ["ROLE_USER"] }),
    )
    .await;
    assert_eq!(back.status, 201);
    assert_eq!(
        request("GET", &app("/api/whoami"), Some(&token), None)
            .await
            .status,
        401
    );
    let me = request(
        "GET",
        &app("/api/whoami"),
        Some(&basic("admin", "new-secret")),
        None,
    )
    .await;
    assert_eq!(
        me.json(),
        json!({ "name": "admin", "roles": ["ROLE_USER"] })
    );

    // Roles changed for a user whose token is in use: refused at the next request too.
    assert_eq!(
        request("GET", &app("/proxy/x"), Some(&root), None)
            .await
            .status,
        200
    );
    let root_token = format!("Bearer {}", recorder.tokens().pop().unwrap());
    assert_eq!(
        request("GET", &app("/api/whoami"), Some(&root_token), None)
            .await
            .status,
        200
    );
    let changed = put(
        "/admin/users/root",
        &root,
        json!({ "password": "root-secret", "roles": ["ROLE_ADMIN"] }),
    )
    .await;
    assert_eq!(changed.status, 200);
    assert_eq!(
        request("GET", &app("/api/whoami"), Some(&root_token), None)
            .await
            .status,
        401
    );

    // Identities the store never held are unaffected: the anonymous caller's token.
    assert_eq!(
        request("GET", &app("/proxy/x"), None, None).await.status,
        200
    );
    let anonymous = format!("Bearer {}", recorder.tokens().pop().unwrap());
    let r = request("GET", &app("/proxy/x"), Some(&anonymous), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// 32 clients send wrong passwords (for a real user and for made-up ones) while that user,
/// signed in once, keeps calling: every one of the user's requests succeeds, the flood is
/// answered `401` or `429` (with `Retry-After`), and the `401`s (the only answers that ran
/// the slow hash) stay within the limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_is_served_during_a_password_flood() {
    let demo = start(&["alice:alice-secret:ROLE_USER"]).await;
    let whoami = format!("http://{}/api/whoami", demo.addr);
    let alice = basic("alice", "alice-secret");
    // Signed in once: her credentials are cached.
    assert_eq!(
        request("GET", &whoami, Some(&alice), None).await.status,
        200
    );

    let began = Instant::now();
    let flood: Vec<_> = (0..32)
        .map(|i| {
            let url = whoami.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for j in 0..4 {
                    let name = if i % 2 == 0 {
                        "alice".to_owned()
                    } else {
                        format!("u{i}-{j}")
                    };
                    let auth = basic(&name, &format!("guess-{i}-{j}"));
                    let r = request("GET", &url, Some(&auth), None).await;
                    seen.push((r.status.as_u16(), r.header("retry-after")));
                }
                seen
            })
        })
        .collect();
    let mut served = 0;
    for _ in 0..40 {
        let r = request("GET", &whoami, Some(&alice), None).await;
        assert_eq!(
            r.status,
            200,
            "alice refused during the flood: {}",
            r.text()
        );
        served += 1;
    }
    let mut wrong = 0;
    let mut limited = 0;
    for task in flood {
        for (status, retry_after) in task.await.unwrap() {
            match status {
                401 => wrong += 1,
                429 => {
                    limited += 1;
                    let secs: u64 = retry_after.expect("a 429 says when").parse().unwrap();
                    assert!(secs >= 1);
                }
                other => panic!("the flood got {other}"),
            }
        }
    }
    let elapsed = began.elapsed().as_secs();
    assert_eq!(served, 40);
    assert_eq!(wrong + limited, 128);
    // 20 failures from one address, then one more every 3 s: the rest never reached the
    // slow hash.
    let allowed = 20 + elapsed / 3 + 1;
    assert!(
        wrong <= allowed,
        "{wrong} wrong passwords were checked, more than the {allowed} allowed"
    );
    assert!(limited > 0);
    // She is still served once the flood is over.
    assert_eq!(
        request("GET", &whoami, Some(&alice), None).await.status,
        200
    );
}
