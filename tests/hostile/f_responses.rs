//! F. Responses from the target (hostile or broken upstream).

use crate::support::*;

async fn app_for(up: &Upstream) -> App {
    let app = start_app(layer()).await;
    app.target(up, "");
    app
}

#[tokio::test]
async fn f2_upstream_cl_and_te_does_not_truncate_the_body() {
    let up = Upstream::canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n01234567890123456789\r\n0\r\n\r\n",
    )
    .await;
    let app = app_for(&up).await;
    let r = app.get("/proxy/x", "").await;
    assert_eq!(r.status, 200);
    assert!(!r.has("content-length"), "{}", r.head_str());
    assert!(r.body.complete);
    assert_eq!(r.text(), "01234567890123456789");
}

#[tokio::test]
async fn f4_truncated_content_length_body_stays_truncated() {
    let up = Upstream::replying(|_| {
        Action::close(&b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"[..])
    })
    .await;
    let app = app_for(&up).await;
    let (r, mut c) = app
        .exchange(format!("GET /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.one("content-length"), "100");
    // Fewer bytes than announced, then the connection closes: visibly truncated.
    assert!(!r.body.complete);
    assert!(r.body.data.len() < 100);
    c.assert_closed().await;
}

#[tokio::test]
async fn f4_truncated_chunked_body_never_gets_a_last_chunk() {
    let up = Upstream::replying(|_| {
        Action::close(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"[..],
        )
    })
    .await;
    let app = app_for(&up).await;
    let (r, mut c) = app
        .exchange(format!("GET /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.body.complete, "a last chunk was sent: {:?}", r.body);
    assert!(
        !String::from_utf8_lossy(&r.body.raw).contains("0\r\n\r\n"),
        "{:?}",
        r.body
    );
    c.assert_closed().await;
}
