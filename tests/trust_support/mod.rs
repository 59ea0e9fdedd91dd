//! Helpers shared by the trust-chain tests (JWKS, rotation, token cache, target-side
//! verifier): real servers on 127.0.0.1:0, a plain hyper-util client, and independent JWT
//! decoding with jsonwebtoken's own JWK support or PyJWT.

#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    io::Write as _,
    net::SocketAddr,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, extract::Request};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, request::Parts};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use serde_json::Value;
use tower_identity_proxy::{Identity, identity::ExtractResult};

/// Serves `app` on 127.0.0.1 with an OS-chosen port.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP/1.1 client for the test's own requests.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
            .to_str()
            .unwrap()
    }
}

pub async fn send(client: &TestClient, req: http::Request<Full<Bytes>>) -> Reply {
    let res = client.request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `GET url` with extra headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http::Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(&client(), req.body(Full::default()).unwrap()).await
}

/// What a recording target saw.
#[derive(Default)]
pub struct Recorded {
    pub hits: AtomicUsize,
    pub tokens: Mutex<Vec<String>>,
}

impl Recorded {
    pub fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A target answering every request `200` with the bearer token it received as the body,
/// recording every token.
pub async fn recording_target() -> (SocketAddr, Arc<Recorded>) {
    let recorded = Arc::new(Recorded::default());
    let seen = Arc::clone(&recorded);
    let app = Router::new().fallback(move |req: Request| {
        let seen = Arc::clone(&seen);
        async move {
            seen.hits.fetch_add(1, Ordering::SeqCst);
            let token = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_owned();
            seen.tokens.lock().unwrap().push(token.clone());
            token
        }
    });
    (serve(app).await, recorded)
}

/// The identity named by `x-test-user: NAME:ROLE,ROLE` (none without the header): cheap,
/// so load tests measure signing and forwarding, not password hashing.
pub fn user_header(parts: &Parts) -> impl Future<Output = ExtractResult> + Send + use<> {
    let value = parts
        .headers
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    async move {
        Ok(value.map(|v| {
            let (name, roles) = v.split_once(':').unwrap_or((v.as_str(), ""));
            Identity::new(name, roles.split(',').filter(|r| !r.is_empty()))
        }))
    }
}

/// Fetches a JWK Set over HTTP and parses it with jsonwebtoken's own `JwkSet`.
pub async fn fetch_jwks(url: &str) -> (Reply, JwkSet) {
    let reply = get(url, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let set: JwkSet = serde_json::from_slice(&reply.body).unwrap();
    (reply, set)
}

/// Verifies `token` with jsonwebtoken alone: the key is the JWK whose `kid` the token
/// names, the algorithm the one that JWK declares. Returns the claims.
pub fn decode_with_jwks(token: &str, jwks: &JwkSet) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} not in JWKS"))?;
    let alg = jwk
        .common
        .key_algorithm
        .ok_or("the JWK has no alg")?
        .to_string()
        .parse()
        .map_err(|_| "unknown alg")?;
    if header.alg != alg {
        return Err(format!(
            "token alg {:?} is not the key's {alg:?}",
            header.alg
        ));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(alg);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

/// The Python interpreter with PyJWT and cryptography: `$TIP_PYTHON`, else `python3`.
///
/// When it is missing, the test fails if `$CI` is set and is skipped (with a line saying
/// so) otherwise.
pub fn python_with_pyjwt(test: &str) -> Option<String> {
    let python = std::env::var("TIP_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let why = format!(
        "{python} cannot `import jwt, cryptography`: set TIP_PYTHON to an interpreter with \
         `pyjwt[crypto]` (see notes/ci-trust.md)"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}");
    }
    // Straight to stderr: libtest captures `eprintln!` of passing tests, not this.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
    None
}
