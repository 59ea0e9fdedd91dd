//! Arbitrary method, URI and header bytes through the pure rewriting functions.
//!
//! Run: `cargo +nightly fuzz run rewrite` (from the repository root).
//!
//! Invariants checked on every request that is not refused:
//! - no panic (`rewrite_request` and `rewrite_response` are total);
//! - the upstream path starts with the target's base path, and no dot-segment survives in
//!   any spelling (`.`/`..` after one percent-decoding, with `/`, `\` as separators, `;`
//!   parameters ignored), so nothing climbs out of the base path;
//! - the query is forwarded byte for byte;
//! - exactly one framing header when there is a body, and never both;
//! - none of the client's `Authorization`, `Proxy-Authorization`, `Cookie`, `Forwarded`,
//!   `X-Forwarded-*` or hop-by-hop headers survive; `X-Forwarded-Host`/`-Proto` and `Via`
//!   appear exactly once, ours;
//! - the upstream request is HTTP/1.1 with an absolute URI on the target's authority.
//!
//! On responses: no panic; no hop-by-hop header survives; never `Content-Length` next to
//! `Transfer-Encoding`; a response `check_response` lets through has at most one
//! `Content-Length`, a plain decimal number, and none on a `1xx` or `204`; every
//! `Set-Cookie` ends up with one `Path` under the prefix.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version, header};
use libfuzzer_sys::fuzz_target;
use tower_identity_proxy::{
    __fuzzing::{
        Framing, RewriteConfig, check_response, rewrite_request, rewrite_response,
        scope_set_cookies,
    },
    Target,
};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: &'a [u8],
    prefix: u8,
    uri: &'a [u8],
    version: u8,
    target: u8,
    framing: u8,
    headers: Vec<(&'a [u8], &'a [u8])>,
    status: u16,
    response_headers: Vec<(&'a [u8], &'a [u8])>,
}

const TARGETS: [&str; 3] = [
    "http://t:1",
    "http://t:1/api/v1",
    "https://t.example:8443/base/",
];

fn setup() -> &'static (RewriteConfig, Vec<Target>) {
    static SETUP: OnceLock<(RewriteConfig, Vec<Target>)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = RewriteConfig::new("/proxy").expect("prefix");
        let targets = TARGETS
            .iter()
            .map(|t| Target::parse(t).expect("target"))
            .collect();
        (config, targets)
    })
}

fn header_map(pairs: &[(&[u8], &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
    map
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// One percent-decoding, `\` as `/`: the path as the most lenient target would read it.
fn lenient(path: &str) -> Vec<u8> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    for c in &mut out {
        if *c == b'\\' {
            *c = b'/';
        }
    }
    out
}

const NEVER_FORWARDED: [&str; 15] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "forwarded",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "http2-settings",
    "expect",
    "host",
    "x-real-ip",
    "proxy-authenticate",
    "x-original-url",
    "x-rewrite-url",
];

fuzz_target!(|input: Input<'_>| {
    let (config, targets) = setup();
    let target = &targets[input.target as usize % targets.len()];
    let Ok(method) = Method::from_bytes(input.method) else {
        return;
    };
    let uri_bytes = match input.prefix % 3 {
        0 => input.uri.to_vec(),
        1 => [b"/proxy".as_slice(), input.uri].concat(),
        _ => [b"/proxy/".as_slice(), input.uri].concat(),
    };
    let Ok(uri) = Uri::try_from(uri_bytes) else {
        return; // hyper refuses such a request line before the layer sees it
    };
    let version = match input.version % 4 {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        2 => Version::HTTP_2,
        _ => Version::HTTP_09,
    };
    let framing = match input.framing % 3 {
        0 => Framing::Empty,
        1 => Framing::Length,
        _ => Framing::Unknown,
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = header_map(&input.headers);
    let client_te = parts.headers.get_all(header::TE).iter().count();

    if let Ok(out) = rewrite_request(&parts, target, config, framing) {
        let h = &out.headers;
        // Where it goes.
        assert_eq!(out.version, Version::HTTP_11);
        assert_eq!(out.uri.scheme(), Some(target.scheme()));
        assert_eq!(out.uri.authority(), Some(target.authority()));
        let path = out.uri.path();
        assert!(path.starts_with('/'), "{path}");
        let base = target.base_path();
        assert!(
            path == base || path.starts_with(&format!("{base}/")) || (base.is_empty()),
            "{path} is outside {base}"
        );
        for segment in lenient(path).split(|b| *b == b'/') {
            let name = segment.split(|b| *b == b';').next().unwrap_or_default();
            assert!(name != b"." && name != b"..", "dot-segment in {path}");
        }
        assert_eq!(out.uri.query(), parts.uri.query());
        // Framing.
        let cl = h.get_all(header::CONTENT_LENGTH).iter().count();
        let te = h.get_all(header::TRANSFER_ENCODING).iter().count();
        assert!(cl + te <= 1, "ambiguous framing: {h:?}");
        match framing {
            Framing::Unknown => assert_eq!(h[header::TRANSFER_ENCODING], "chunked"),
            Framing::Empty => assert_eq!(te, 0),
            Framing::Length => assert_eq!(te, 0),
        }
        // Credentials and hop-by-hop headers.
        for name in NEVER_FORWARDED {
            assert!(!h.contains_key(name), "{name} forwarded: {h:?}");
        }
        for (name, _) in h {
            let n = name.as_str();
            if n.starts_with("x-forwarded-") {
                assert!(
                    n == "x-forwarded-host" || n == "x-forwarded-proto",
                    "{n} forwarded"
                );
            }
        }
        assert_eq!(h.get_all("x-forwarded-host").iter().count(), 1);
        assert_eq!(h.get_all("x-forwarded-proto").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "http");
        let via: Vec<_> = h.get_all(header::VIA).iter().collect();
        assert_eq!(via.len(), 1);
        let ours = format!(" {}", config.pseudonym());
        assert!(via[0].as_bytes().ends_with(ours.as_bytes()), "{via:?}");
        if let Some(te) = h.get(header::TE) {
            assert_eq!(te, "trailers");
            assert!(client_te > 0);
        }
    }

    // The response side.
    let Ok(status) = http::StatusCode::from_u16(input.status) else {
        return;
    };
    let (mut res, ()) = Response::new(()).into_parts();
    res.status = status;
    res.headers = header_map(&input.response_headers);
    let had_te = res.headers.contains_key(header::TRANSFER_ENCODING);
    // What the proxy relays at all: framing it can forward (else `502`).
    let relayed = check_response(&res).is_ok();
    rewrite_response(&mut res, config);
    if relayed {
        // One length, a plain decimal number, and none where a status has no content.
        let lengths: Vec<_> = res.headers.get_all(header::CONTENT_LENGTH).iter().collect();
        assert!(lengths.len() <= 1, "{lengths:?}");
        if let Some(length) = lengths.first() {
            assert!(
                !length.is_empty() && length.as_bytes().iter().all(u8::is_ascii_digit),
                "{length:?}"
            );
            assert!(!status.is_informational() && status != http::StatusCode::NO_CONTENT);
        }
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
        "transfer-encoding",
        "http2-settings",
    ] {
        assert!(!res.headers.contains_key(name), "{name} in response");
    }
    if had_te {
        assert!(!res.headers.contains_key(header::CONTENT_LENGTH));
    }
    assert_eq!(res.headers.get_all(header::VIA).iter().count(), 1);
    // Every cookie the target sets is scoped under the prefix.
    scope_set_cookies(&mut res, config, target);
    for cookie in res.headers.get_all(header::SET_COOKIE) {
        let path = cookie
            .as_bytes()
            .split(|b| *b == b';')
            .skip(1)
            .filter_map(|a| {
                let a = a.trim_ascii();
                (a.len() >= 5 && a[..5].eq_ignore_ascii_case(b"path=")).then(|| &a[5..])
            })
            .last();
        let path = path.expect("a Path attribute");
        assert!(
            path == b"/proxy" || path.starts_with(b"/proxy/"),
            "cookie path {:?} outside the prefix",
            String::from_utf8_lossy(path)
        );
    }
});
