//! Servers on 127.0.0.1:0: any axum `Router` ([`serve`]), and the app of most tests, an
//! echoing inner service wrapped in the `ProxyLayer` ([`spawn_app`]).

use std::net::SocketAddr;

use axum::{Router, extract::Request};
use http::HeaderMap;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tower_identity_proxy::{ProxyLayer, identity::IdentityExtractor, jwt::JwtSigner};

/// A server on 127.0.0.1; it stops when dropped, unless [detached](Self::detach).
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds 127.0.0.1:0 and runs `accept` (the server's accept loop) on that listener.
    pub async fn spawn<F, Fut>(accept: F) -> Self
    where
        F: FnOnce(TcpListener) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        Self {
            addr,
            task: Some(tokio::spawn(accept(listener))),
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Lets the server run until the test's runtime ends; returns its address.
    pub fn detach(mut self) -> SocketAddr {
        self.task = None;
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Serves `router` on 127.0.0.1:0 (HTTP/1.1 and HTTP/2 cleartext, upgrades enabled).
pub async fn serve(router: Router) -> Server {
    Server::spawn(|listener| async move {
        let _ = axum::serve(listener, router).await;
    })
    .await
}

/// Serves [`inner_echo`] wrapped in `layer`.
pub async fn spawn_app<I: IdentityExtractor, J: JwtSigner>(layer: ProxyLayer<I, J>) -> Server {
    serve(inner_echo().layer(layer)).await
}

/// A request extension put by a test middleware, reported by [`inner_echo`].
#[derive(Clone, Debug)]
pub struct Marker(pub String);

/// The app's own service in the tests: answers every request with a JSON description of it,
/// `"inner": true`, and the [`Marker`] extension if present.
pub fn inner_echo() -> Router {
    Router::new().fallback(|req: Request| async move {
        let marker = req.extensions().get::<Marker>().map(|m| m.0.clone());
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        axum::Json(json!({
            "inner": true,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers_json(&parts.headers),
            "body": String::from_utf8_lossy(&body),
            "marker": marker,
        }))
    })
}

/// Headers as `[[name, value], …]`, in order, values lossy.
pub fn headers_json(headers: &HeaderMap) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
            .collect(),
    )
}
