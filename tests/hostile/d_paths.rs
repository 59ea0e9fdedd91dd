//! D. Path and query mapping: prefix strip, traversal, encoding.

use crate::support::*;

async fn setup() -> (Upstream, App) {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "/api/v1");
    (up, app)
}

#[tokio::test]
async fn d2_dot_segments_are_refused_in_every_spelling() {
    let (up, app) = setup().await;
    for path in [
        "/proxy/..",
        "/proxy/../admin",
        "/proxy/a/../../admin",
        "/proxy/%2e%2e/admin",
        "/proxy/%2E%2e/admin",
        "/proxy/.%2E/admin",
        "/proxy/..%2fadmin",
        "/proxy/..%2Fadmin",
        "/proxy/a%2F..%2F..%2Fadmin",
        "/proxy/..;/admin",
        "/proxy/..;x=y/admin",
        "/proxy/..\\admin",
        "/proxy/%2e%2e%5cadmin",
        "/proxy/%2e%2e%5Cadmin",
        "/proxy/a\\..\\..\\admin",
        "/proxy/.",
        "/proxy/./x",
        "/proxy/%2e/x",
    ] {
        let r = app.get(path, "").await;
        assert_eq!(r.status, 400, "{path}");
    }
    up.assert_untouched();
}

#[tokio::test]
async fn d2_dot_lookalikes_are_forwarded_unchanged() {
    let (up, app) = setup().await;
    let r = app.get("/proxy/a..b/c.d/..x/.well-known/...", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(up.only().target, "/api/v1/a..b/c.d/..x/.well-known/...");
}
