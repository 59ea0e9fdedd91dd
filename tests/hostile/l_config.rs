//! L. Runtime configuration.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use crate::support::*;

#[tokio::test]
async fn l1_disabled_by_default_for_every_method() {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    let check = |app: &App| {
        let a = app.addr;
        async move {
            for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"] {
                for path in ["/proxy", "/proxy/", "/proxy/x?y=1"] {
                    let req = format!(
                        "{method} {path} HTTP/1.1\r\nHost: {a}\r\nContent-Length: 0\r\n\r\n"
                    );
                    let mut c = Raw::connect(a).await;
                    c.send(req.as_bytes()).await;
                    let head = method == "HEAD";
                    let r = c.response(head).await.expect("response");
                    assert_eq!(r.status, 501, "{method} {path}");
                    assert_eq!(r.one("content-type"), "text/plain; charset=utf-8");
                    if head {
                        assert!(r.body.data.is_empty());
                    } else {
                        assert_eq!(r.text(), "The proxy is disabled.");
                    }
                }
            }
        }
    };
    check(&app).await;
    app.target(&up, "");
    assert_eq!(app.get("/proxy/x", "").await.status, 200);
    app.handle.set_target(None).unwrap();
    check(&app).await;
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn l2_target_swaps_under_load_are_atomic() {
    let one = Upstream::ok().await;
    let two = Upstream::ok().await;
    let app = start_app(layer()).await;
    let urls = [
        format!("http://{}/one", one.addr),
        format!("http://{}/two", two.addr),
    ];
    app.handle.set_target(Some(&urls[0])).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let handle = app.handle.clone();
        let stop = Arc::clone(&stop);
        let urls = urls.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                handle.set_target(Some(&urls[i % 2])).unwrap();
                i += 1;
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = Vec::new();
    for n in 0..100 {
        let addr = app.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await;
            c.send(format!("GET /proxy/n{n} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                .await;
            c.response(false).await.expect("response").status
        }));
    }
    for t in tasks {
        assert_eq!(within("request", t).await.unwrap(), 200);
    }
    stop.store(true, Ordering::SeqCst);
    flipper.await.unwrap();
    let (a, b) = (one.requests(), two.requests());
    assert_eq!(a.len() + b.len(), 100);
    for r in &a {
        assert!(r.target.starts_with("/one/n"), "{}", r.target);
        assert_eq!(r.one("host"), one.addr.to_string());
    }
    for r in &b {
        assert!(r.target.starts_with("/two/n"), "{}", r.target);
        assert_eq!(r.one("host"), two.addr.to_string());
    }
}

#[tokio::test]
async fn l3_invalid_target_urls_are_refused_and_change_nothing() {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "/base");
    let before = app.handle.target().unwrap().as_str().to_owned();
    for bad in [
        "ftp://x",
        "unix:/var/run/docker.sock|http://x",
        "http://",
        "not a url",
        "http://u:p@h/",
        "http://h/#frag",
        "http://h/?q=1",
        "",
        "http://h:99999/",
        "http://h/a/../b",
        "//h/x",
        "http://h\r\nX: y/",
    ] {
        let err = app.handle.set_target(Some(bad));
        assert!(err.is_err(), "{bad:?} accepted");
        assert!(
            err.unwrap_err().to_string().contains("target URL"),
            "{bad:?}"
        );
        assert_eq!(app.handle.target().unwrap().as_str(), before);
    }
    assert_eq!(app.get("/proxy/x", "").await.status, 200);
    assert_eq!(up.only().target, "/base/x");
}

/// The target in force when the token is ready gets it, never one replaced (or the proxy
/// disabled) while the caller was being identified: identification can take long (a queue
/// of Argon2 checks, a session store), and an admin who moves the proxy off a target expects
/// it to receive no further token.
#[tokio::test]
async fn l4_a_target_replaced_while_the_caller_is_identified_gets_no_token() {
    use tokio::sync::{Notify, Semaphore};
    use tower_identity_proxy::{ProxyLayer, identity::Identity, jwt::KeySigner};

    let old = Upstream::ok().await;
    let new = Upstream::ok().await;
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Semaphore::new(0));
    let extractor = {
        let entered = Arc::clone(&entered);
        let release = Arc::clone(&release);
        move |_: &http::request::Parts| {
            let entered = Arc::clone(&entered);
            let release = Arc::clone(&release);
            async move {
                entered.notify_one();
                release.acquire().await.expect("gate").forget();
                Ok(Some(Identity::new(ALICE, ["ROLE_USER"])))
            }
        }
    };
    let layer = ProxyLayer::new(KeySigner::rs512(rsa_keys()).expect("signer"))
        .with_identity(extractor)
        .upstream_timeout(3 * LIVENESS);
    let app = start_app(layer).await;
    app.target(&old, "/old");

    let send = |path: &'static str| {
        let addr = app.addr;
        tokio::spawn(async move {
            let mut c = Raw::connect(addr).await;
            c.send(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                .await;
            c.response(false).await.expect("response")
        })
    };

    // Replaced: the request goes to the new target, whole.
    let pending = send("/proxy/x");
    within("extractor entered", entered.notified()).await;
    app.target(&new, "/new");
    release.add_permits(1);
    let res = within("response", pending).await.unwrap();
    assert_eq!(res.status, 200);
    old.assert_untouched();
    let got = new.only();
    assert_eq!(got.target, "/new/x");
    assert_eq!(got.one("host"), new.addr.to_string());
    assert_eq!(decode_rs512(&got.bearer())["sub"], ALICE);

    // Disabled: nothing is sent anywhere.
    let pending = send("/proxy/y");
    within("extractor entered", entered.notified()).await;
    app.handle.disable();
    release.add_permits(1);
    let res = within("response", pending).await.unwrap();
    assert_eq!(res.status, 501);
    assert_eq!(res.text(), "The proxy is disabled.");
    old.assert_untouched();
    assert_eq!(new.requests().len(), 1);
}
