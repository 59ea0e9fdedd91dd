//! Test support shared by every integration-test binary, one concern a module:
//!
//! - [`keys`]: the OpenSSL-made fixtures in `tests/fixtures/` (see its README) and keys made
//!   once per test binary: [`rsa_keys`], [`ec256_keys`], [`ec384_keys`], [`ed25519_keys`].
//! - [`jwt`]: independent JWT checks, with `jsonwebtoken` called directly (never the crate's
//!   own verifier): [`decode_jwt`], [`decode_rs512`], [`decode_with_jwks`]; PyJWT's
//!   interpreter ([`python_with_pyjwt`]).
//! - [`server`]: [`serve`] runs any axum `Router` on 127.0.0.1:0 until the [`Server`] is
//!   dropped; [`spawn_app`] serves [`inner_echo`] wrapped in a `ProxyLayer`.
//! - [`target`]: [`echo_target`] (plain or TLS), a target that records every request it
//!   receives ([`Seen`]) and describes it back (see [`EchoTarget`]), or answers the bearer
//!   token it got ([`token_target`]); upgrades are handled by [`upgrade`].
//! - [`client`]: hyper-util's pooled client over HTTP/1.1 or HTTP/2 ([`client`],
//!   [`h2_client`]), [`send`], [`get`] and a response read whole, [`Reply`].
//! - [`raw`]: a raw TCP client writing exact bytes and reading HTTP/1.1 responses as sent
//!   ([`Raw`], [`raw()`]), for requests a well-behaved client cannot make.
//! - [`tls`]: a test PKI made with rcgen and TLS server configurations.
//! - [`example`]: the examples run as their binaries ([`Example`]).
//! - [`hostile`]: the hostile-input harness, a capturing upstream that records the exact
//!   bytes it receives ([`hostile::Upstream`]) and an app served by hyper-util's server.
//! - [`app`]: identity extractors and the protocol tests' app (Alice's identity).
//!
//! Include it with `mod common;` (or `#[path = "../common/mod.rs"] mod common;` from a
//! directory binary) and use what you need; each test binary uses a part.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc
)]

pub mod app;
pub mod client;
pub mod example;
pub mod hostile;
pub mod jwt;
pub mod keys;
pub mod raw;
pub mod server;
pub mod target;
pub mod tls;
pub mod upgrade;

use std::{future::Future, time::Duration};

// Each binary uses a part.
#[allow(unused_imports)]
pub use {app::*, client::*, example::*, jwt::*, keys::*, raw::*, server::*, target::*, tls::*};

/// How long any single wait may take before the test fails as hung.
pub const LIVENESS: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`LIVENESS`]: a hang becomes a
/// failure; no timing is asserted.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    within_for(LIVENESS, what, f).await
}

/// [`within`] for a wait that does CPU-heavy work of its own (generating an RSA key, say),
/// which a loaded machine stretches past [`LIVENESS`]: bounded by `bound` instead.
pub async fn within_for<F: Future>(bound: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(bound, f).await {
        Ok(v) => v,
        Err(_) => panic!("hung (liveness bound exceeded): {what}"),
    }
}

/// Awaits `f`, failing the test as hung only when `progress` (a count that grows while `f`
/// gets anywhere, such as bytes moved) stays the same for [`LIVENESS`]: for a long transfer,
/// which may take longer than that in all on a loaded machine.
pub async fn while_progressing<F: Future>(
    what: &str,
    progress: impl Fn() -> usize,
    f: F,
) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut last = progress();
    loop {
        if let Ok(v) = tokio::time::timeout(LIVENESS, f.as_mut()).await {
            return v;
        }
        let now = progress();
        assert!(
            now != last,
            "hung (no progress for the liveness bound): {what}"
        );
        last = now;
    }
}

/// What one attempt of a [`despite_stalls`] test found.
#[derive(Debug)]
pub enum Attempt {
    /// The feature did what the test asks: the test passes.
    Held,
    /// The timeout under test fired, but only after a silence at least half as long as it
    /// (see [`stalled_or_broken`]): the machine stalled, and the attempt tells nothing.
    Stalled(String),
}

/// Runs a test of a timeout that traffic keeps from firing (an idle timeout, a timeout
/// counted from the last bytes): `attempt` gets the timeout to configure, `first` and then
/// twice as long after each attempt that a stall of the test machine made inconclusive, at
/// most four attempts. No time is asserted: an attempt fails the test only when the timeout
/// fired too early to be anything but the feature failing.
pub async fn despite_stalls<F, Fut>(first: Duration, mut attempt: F)
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let mut timeout = first;
    let mut stalls = Vec::new();
    for _ in 0..4 {
        match attempt(timeout).await {
            Attempt::Held => return,
            Attempt::Stalled(why) => stalls.push(format!("timeout {timeout:?}: {why}")),
        }
        timeout *= 2;
    }
    panic!("inconclusive: the test machine stalled in every attempt: {stalls:#?}");
}

/// Judges a timeout (configured as `timeout`) that fired while the test kept traffic
/// moving. `quiet_since` is an instant the test knows the feature's clock was reset at or
/// after (the sending of the last bytes known to have crossed, or what happened before the
/// clock started). Working as documented, the timeout fires no earlier than `timeout` after
/// that, so less than half of it is the feature failing (this panics); anything longer is a
/// stall of the machine ([`Attempt::Stalled`]). A slow machine only ever lengthens the
/// silence: it cannot fail the test.
pub fn stalled_or_broken(
    what: &str,
    timeout: Duration,
    quiet_since: std::time::Instant,
) -> Attempt {
    let silence = quiet_since.elapsed();
    assert!(
        silence >= timeout / 2,
        "{what} at most {silence:?} after the test last knew the {timeout:?} clock reset: \
         too early for that timeout (a stall of the machine would take at least half of it)"
    );
    Attempt::Stalled(format!("{what} {silence:?} after the last known reset"))
}

/// A fresh temporary directory (removed by the caller with [`remove_dir`]).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tip-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh [`temp_dir`] holding the fixture RSA key pair as the demo's `--keys DIR` reads it
/// (`private-key.pem`, `public-key.pem`); remove it with [`remove_dir`].
pub fn fixture_keys_dir(tag: &str) -> std::path::PathBuf {
    let dir = temp_dir(tag);
    std::fs::write(dir.join("private-key.pem"), keys::RSA_PKCS8_PEM).unwrap();
    std::fs::write(dir.join("public-key.pem"), keys::RSA_PUBLIC_PEM).unwrap();
    dir
}

/// Removes a directory made by [`temp_dir`], ignoring errors.
pub fn remove_dir(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `n` random-looking bytes covering every byte value (a fixed xorshift sequence).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
