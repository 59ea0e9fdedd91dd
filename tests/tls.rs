//! https targets: verification against a test CA made with rcgen, refusals as `502`,
//! mTLS, and HTTP/2 negotiated by ALPN.
#![cfg(feature = "https")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use http::{Request, Version};
use tower_identity_proxy::client::ProxyClient;

const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

#[tokio::test]
async fn https_target_verified_with_an_extra_root_and_h2_by_alpn() {
    let ca = Ca::new("proto test CA");
    let leaf = ca.leaf(&["localhost"], false);
    let target = tls_echo_target(server_config(&leaf, H2_H1, None)).await;
    let client = client_trusting(&ca).build().unwrap();
    let app = alice_app(
        client,
        &format!("https://localhost:{}/base", target.addr().port()),
    )
    .await;

    for client in [common::client(), h2_client()] {
        let got = within(
            "https",
            get_on(&client, &format!("http://{app}/proxy/hello?x=1")),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
        let seen = got.json();
        // ALPN offered h2 first and the target chose it: the target saw HTTP/2.
        assert_eq!(seen["alpn"], "h2");
        assert_eq!(seen["version"], "HTTP/2.0");
        assert_eq!(
            seen["uri"],
            format!("https://localhost:{}/base/hello?x=1", target.addr().port())
        );
        assert_alice(header_of(&seen, "authorization").unwrap());
        assert_eq!(
            header_of(&seen, "x-forwarded-host"),
            Some(app.to_string().as_str())
        );
        assert_eq!(header_of(&seen, "x-forwarded-proto"), Some("http"));
        // HTTP/2 forbids connection-specific headers; none reached the target.
        for gone in ["connection", "transfer-encoding", "keep-alive", "upgrade"] {
            assert!(header_of(&seen, gone).is_none(), "{gone}: {seen}");
        }
    }
}

#[tokio::test]
async fn https_target_speaking_only_http1_is_reached_over_http1() {
    let ca = Ca::new("proto test CA");
    let leaf = ca.leaf(&["localhost"], false);
    let target = tls_echo_target(server_config(&leaf, &[b"http/1.1"], None)).await;
    let client = client_trusting(&ca).build().unwrap();
    let app = alice_app(
        client,
        &format!("https://localhost:{}", target.addr().port()),
    )
    .await;

    // An HTTP/2 caller reaches an HTTP/1.1-only target, body and all.
    let req = Request::post(format!("http://{app}/proxy/upload"))
        .body(full("payload"))
        .unwrap();
    let got = within("https h1", send_on(&h2_client(), req)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.version, Version::HTTP_2);
    let seen = got.json();
    assert_eq!(seen["alpn"], "http/1.1");
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["body"], "payload");
    assert_alice(header_of(&seen, "authorization").unwrap());
}

/// Many requests at once to https targets no connection was made to yet: each new
/// connection negotiates its protocol by ALPN (one HTTP/2 connection is then shared, HTTP/1.1
/// connections are pooled), and every request is answered in the protocol the target chose.
#[tokio::test]
async fn concurrent_first_requests_to_https_targets_are_all_answered() {
    let ca = Ca::new("proto test CA");
    let leaf = ca.leaf(&["localhost"], false);
    for (alpn, version) in [
        (H2_H1, "HTTP/2.0"),
        (&[b"http/1.1".as_slice()][..], "HTTP/1.1"),
    ] {
        let target = tls_echo_target(server_config(&leaf, alpn, None)).await;
        let app = alice_app(
            client_trusting(&ca).build().unwrap(),
            &format!("https://localhost:{}", target.addr().port()),
        )
        .await;
        let client = common::client();
        for round in 0..2 {
            let urls: Vec<_> = (0..16)
                .map(|i| format!("http://{app}/proxy/r{round}/{i}"))
                .collect();
            let gets = urls.iter().map(|url| get_on(&client, url));
            let answers = within("concurrent", futures_util::future::join_all(gets)).await;
            for (i, got) in answers.iter().enumerate() {
                assert_eq!(got.status, 200, "{version} #{i}: {}", got.text());
                assert_eq!(got.json()["version"], version, "#{i}");
                assert_eq!(got.json()["path"], format!("/r{round}/{i}"), "#{i}");
            }
        }
    }
}

#[tokio::test]
async fn wrong_hostname_is_a_plain_502() {
    let ca = Ca::new("proto test CA");
    let leaf = ca.leaf(&["somewhere-else.example"], false);
    let target = tls_echo_target(server_config(&leaf, H2_H1, None)).await;
    let client = client_trusting(&ca).build().unwrap();
    let app = alice_app(
        client,
        &format!("https://localhost:{}", target.addr().port()),
    )
    .await;

    let got = within("wrong name", get(&format!("http://{app}/proxy/x"))).await;
    assert_eq!(got.status, 502);
    assert_eq!(got.text(), UNREACHABLE);
    assert_eq!(got.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(target.count(), 0, "nothing may reach the target");
}

#[tokio::test]
async fn untrusted_ca_is_a_plain_502() {
    let trusted = Ca::new("trusted CA");
    let other = Ca::new("other CA");
    let leaf = other.leaf(&["localhost"], false);
    let target = tls_echo_target(server_config(&leaf, H2_H1, None)).await;
    // Neither the webpki roots nor the extra root know `other`.
    let client = client_trusting(&trusted).build().unwrap();
    let app = alice_app(
        client,
        &format!("https://localhost:{}", target.addr().port()),
    )
    .await;

    let got = within(
        "untrusted",
        get_on(&h2_client(), &format!("http://{app}/proxy/x")),
    )
    .await;
    assert_eq!(got.status, 502);
    assert_eq!(got.text(), UNREACHABLE);
    assert_eq!(target.count(), 0);

    // The default client (webpki roots only) refuses it too.
    let app = alice_app(
        ProxyClient::new().unwrap(),
        &format!("https://localhost:{}", target.addr().port()),
    )
    .await;
    let got = within("untrusted default", get(&format!("http://{app}/proxy/x"))).await;
    assert_eq!(got.status, 502);
    assert_eq!(target.count(), 0);
}

#[tokio::test]
async fn mtls_presents_the_client_certificate() {
    let ca = Ca::new("proto test CA");
    let clients_ca = Ca::new("client CA");
    let leaf = ca.leaf(&["localhost"], false);
    let target = tls_echo_target(server_config(&leaf, H2_H1, Some(&clients_ca))).await;
    let url = format!("https://localhost:{}", target.addr().port());

    // Without a client certificate the target refuses the handshake: 502.
    let app = alice_app(client_trusting(&ca).build().unwrap(), &url).await;
    let got = within("no client cert", get(&format!("http://{app}/proxy/x"))).await;
    assert_eq!(got.status, 502);
    assert_eq!(got.text(), UNREACHABLE);
    assert_eq!(target.count(), 0);

    // With one issued by the CA the target trusts, the request goes through.
    let me = clients_ca.leaf(&["proxy.client"], true);
    let client = client_trusting(&ca)
        .client_certificate_pem(me.cert_pem.as_bytes(), me.key_pem.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let app = alice_app(client, &url).await;
    let got = within("client cert", get(&format!("http://{app}/proxy/x"))).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = got.json();
    assert_eq!(seen["client_cert"], true);
    assert_alice(header_of(&seen, "authorization").unwrap());
}

#[test]
fn bad_pem_is_a_config_error() {
    assert!(
        ProxyClient::builder()
            .add_root_certificates_pem(b"")
            .is_err()
    );
    assert!(
        ProxyClient::builder()
            .add_root_certificates_pem(
                b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
            )
            .is_err()
    );
    let ca = Ca::new("x");
    let leaf = ca.leaf(&["localhost"], true);
    assert!(
        ProxyClient::builder()
            .client_certificate_pem(leaf.cert_pem.as_bytes(), b"no key here")
            .is_err()
    );
}

/// A scratch directory for the demo's files, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tip-proto-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo's command line: unsecured, on 127.0.0.1 port 0, and `args`.
fn demo_options<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--listen", "127.0.0.1:0", "--unsecured"];
    all.extend_from_slice(args);
    all
}

#[tokio::test]
async fn demo_reaches_an_https_target_with_upstream_ca_and_h2c_with_upstream_h2c() {
    let scratch = Scratch::new("demo");
    let keys_dir = scratch.0.to_str().unwrap().to_owned();
    scratch.write("private-key.pem", &rsa_keys().private_key_pem());
    scratch.write("public-key.pem", &rsa_keys().public_key_pem());
    let ca = Ca::new("demo CA");
    let ca_file = scratch.write("ca.pem", &ca.pem());
    let leaf = ca.leaf(&["localhost"], false);
    let target = tls_echo_target(server_config(&leaf, H2_H1, None)).await;
    let url = format!("https://localhost:{}", target.addr().port());

    // --proxy-url https://… with --upstream-ca: verified against the private CA, h2 by ALPN.
    let running = Example::start(
        "demo",
        &demo_options(&[
            "--keys",
            &keys_dir,
            "--proxy-url",
            &url,
            "--upstream-ca",
            &ca_file,
        ]),
    )
    .await;
    let got = within(
        "demo https",
        get(&format!("http://{}/proxy/hello", running.addr)),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = got.json();
    assert_eq!(seen["version"], "HTTP/2.0");
    let claims = decode_rs512(bearer_token(header_of(&seen, "authorization").unwrap()));
    assert_eq!(claims["sub"], "anonymousUser");
    drop(running);

    // Without it, the private CA is unknown: 502.
    let running = Example::start(
        "demo",
        &demo_options(&["--keys", &keys_dir, "--proxy-url", &url]),
    )
    .await;
    let got = within(
        "demo https no ca",
        get(&format!("http://{}/proxy/hello", running.addr)),
    )
    .await;
    assert_eq!(got.status, 502);
    assert_eq!(got.text(), UNREACHABLE);
    drop(running);

    // --upstream-h2c: HTTP/2 with prior knowledge to a plain-http target.
    let plain = echo_target().await;
    let plain_url = format!("http://{}", plain.addr());
    let running = Example::start(
        "demo",
        &demo_options(&[
            "--keys",
            &keys_dir,
            "--proxy-url",
            &plain_url,
            "--upstream-h2c",
        ]),
    )
    .await;
    let got = within(
        "demo h2c",
        get(&format!("http://{}/proxy/hello", running.addr)),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["version"], "HTTP/2.0");
    drop(running);

    // A CA file that cannot be read or holds no certificate stops the demo at start-up.
    let missing = scratch.0.join("missing.pem");
    let err = example_fails(
        "demo",
        &demo_options(&[
            "--keys",
            &keys_dir,
            "--upstream-ca",
            missing.to_str().unwrap(),
        ]),
    )
    .await;
    assert!(err.contains("missing.pem"), "{err}");
    let not_pem = scratch.write("not.pem", "hello");
    let err = example_fails(
        "demo",
        &demo_options(&["--keys", &keys_dir, "--upstream-ca", &not_pem]),
    )
    .await;
    assert!(err.contains("not.pem"), "{err}");
}
