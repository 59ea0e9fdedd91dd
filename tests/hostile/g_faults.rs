//! G. Timeouts, resource limits, cancellation, streaming.

use std::time::Duration;

use crate::support::*;

/// A body that leaks nothing: no address, port, OS error or token.
fn assert_no_internals(r: &Resp, target: &str) {
    let text = r.text();
    let port = target.rsplit(':').next().unwrap_or_default();
    for leak in [
        target,
        port,
        "127.0.0.1",
        "os error",
        "refused",
        "Bearer",
        "hyper",
    ] {
        assert!(!text.contains(leak), "{leak:?} leaked in {text:?}");
    }
    assert_eq!(r.one("content-type"), "text/plain; charset=utf-8");
}

#[tokio::test]
async fn g1_refused_connection_is_502_without_internals() {
    // A port that was just free: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let app = start_app(layer()).await;
    app.handle
        .set_target(Some(&format!("http://{closed}")))
        .unwrap();
    let r = app.get("/proxy/x", "").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "The proxy target could not be reached.");
    assert_no_internals(&r, &closed.to_string());
}

#[tokio::test]
async fn g2_silent_target_is_504_after_the_timeout() {
    let up = Upstream::silent().await;
    let app = start_app(layer().upstream_timeout(Duration::from_millis(300))).await;
    app.target(&up, "");
    let r = app.get("/proxy/x", "").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "The proxy target did not respond in time.");
    assert_no_internals(&r, &up.addr.to_string());
    // The timed-out upstream request is abandoned: its connection is closed.
    up.wait("upstream connection closed", |v| v.eofs >= 1).await;
}

/// The client sends part of a body, the upstream sees the request head, then the client
/// vanishes: the upstream must see the connection end before the body does.
async fn client_abort_mid_upload(head_and_part: &str) {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let mut c = app.raw().await;
    c.send(
        head_and_part
            .replace("{A}", &app.addr.to_string())
            .as_bytes(),
    )
    .await;
    up.wait("request head upstream", |v| v.heads >= 1).await;
    drop(c);
    up.wait("upstream sees the request end early", |v| v.eofs >= 1)
        .await;
    assert!(
        up.requests().is_empty(),
        "a complete request reached the target"
    );
    let partials = up.partials();
    assert_eq!(partials.len(), 1, "{partials:?}");
}

#[tokio::test]
async fn g4_client_abort_mid_chunked_upload_never_completes_upstream() {
    client_abort_mid_upload(
        "POST /proxy/up HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await;
}

#[tokio::test]
async fn g4_client_abort_mid_length_upload_never_completes_upstream() {
    client_abort_mid_upload(
        "POST /proxy/up HTTP/1.1\r\nHost: {A}\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
}
