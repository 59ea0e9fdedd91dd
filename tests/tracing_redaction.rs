//! The proxy's `tracing` output, captured at TRACE level from every crate and thread, records
//! each proxied request's target, status and duration, and never a credential: not the
//! client's Basic or Bearer credentials, not the minted JWT, not a cookie, not key material.
//! (Case H6 of the reliability checklist; its own test binary because it installs a global
//! subscriber.)

#![allow(unreachable_pub)]

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use common::hostile::*;
use tracing_subscriber::fmt::{MakeWriter, format::FmtSpan};

/// Everything written by the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h6_traces_record_target_status_duration_and_no_secret() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .init();

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let alice = b64(&format!("{ALICE}:{ALICE_PW}"));
    let wrong = b64(&format!("{ALICE}:wrong-pass-7f3a"));
    let forged = "eyJhbGciOiJSUzUxMiJ9.eyJzdWIiOiJmb3JnZWQtc3ViIn0.Zm9yZ2VkLXNpZ25hdHVyZQ";
    let cookie = "JSESSIONID=cookie-s3cr3t-91b2";

    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "/api");
    let sends = [
        format!("Authorization: Basic {alice}\r\nCookie: {cookie}\r\n"),
        format!("Authorization: Basic {wrong}\r\n"),
        format!("Authorization: Bearer {forged}\r\n"),
        format!("Proxy-Authorization: Basic {alice}\r\nX-Forwarded-Host: evil\r\n"),
    ];
    let mut statuses = Vec::new();
    for extra in &sends {
        statuses.push(app.get("/proxy/traced?q=1", extra).await.status);
    }
    assert_eq!(statuses, [200, 401, 401, 200]);
    // The same over HTTP/2 (h2 logs frames at TRACE).
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{}/proxy/traced?q=1", app.addr))
        .header("authorization", format!("Basic {alice}"))
        .header("cookie", cookie)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);
    // A refused target: errors are logged with their cause.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    app.handle
        .set_target(Some(&format!("http://{closed}")))
        .unwrap();
    assert_eq!(
        app.get("/proxy/x", &format!("Authorization: Basic {alice}\r\n"))
            .await
            .status,
        502
    );
    let minted: Vec<String> = up.requests().iter().map(|r| r.bearer()).collect();
    assert_eq!(minted.len(), 3);

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    // The span of a proxied request carries what it should.
    let target = format!("target=\"http://{}/api\"", up.addr);
    let closing: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("proxy{") && l.contains(&target) && l.contains("close"))
        .collect();
    assert!(
        closing.iter().any(|l| l.contains("status=200")
            && l.contains("duration_ms=")
            && l.contains("path=\"/proxy/traced\"")),
        "no closed proxy span with target, status and duration in:\n{text}"
    );
    assert!(text.contains("status=401"), "{text}");
    assert!(text.contains("status=502"), "{text}");
    // And nothing secret, anywhere.
    let private = rsa_keys().private_key_pem();
    let key_body: String = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mut secrets: Vec<String> = vec![
        alice.clone(),
        wrong.clone(),
        ALICE_PW.to_owned(),
        "wrong-pass-7f3a".to_owned(),
        forged.to_owned(),
        "cookie-s3cr3t-91b2".to_owned(),
        key_body[..48].to_owned(),
        key_body[key_body.len() - 48..].to_owned(),
        "PRIVATE KEY".to_owned(),
        "q=1".to_owned(),
    ];
    for token in &minted {
        secrets.push(token.clone());
        // Even its signature alone.
        secrets.push(token.rsplit('.').next().unwrap().to_owned());
    }
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "secret {secret:?} found in the traces:\n{text}"
        );
    }
}
