//! J. HTTP/2 on the inbound side (the app serves h2c with prior knowledge).

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::support::*;

/// An HTTP/2 (prior knowledge) client connection to the app.
#[allow(dead_code)]
pub async fn h2_client(
    app: &App,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>> {
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn j1_h2_request_reaches_an_http11_target() {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "/api/v1");
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://app.example:1337/proxy/echo?x=1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = within("h2 response", sender.send_request(req))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), hyper::Version::HTTP_2);
    let body = within("h2 body", collect(res.into_body())).await.unwrap();
    assert_eq!(&body[..], b"ok");
    let got = up.only();
    assert_eq!(got.version, "HTTP/1.1");
    assert_eq!(got.target, "/api/v1/echo?x=1");
    assert_eq!(got.one("x-forwarded-host"), "app.example:1337");
    assert_eq!(got.one("host"), up.addr.to_string());
    assert!(got.one("via").starts_with("2 tip-"), "{}", got.head_str());
    decode_jwt(&got.bearer());
}
