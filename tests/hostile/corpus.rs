//! The AWS http-desync-guardian corpus (`tests/data/http-desync-guardian/`, Apache-2.0,
//! data only; commit in `SOURCE`), each case sent as a raw request to `/proxy<uri>`.
//!
//! Each case is a method, URI, version and raw header lines, with the tier the guardian
//! gives it. What this proxy must do, per tier:
//! - **Severe** (a desync vector): refused — `400` (or `501` for a transfer coding it will
//!   not relay) or the connection closed — and nothing forwarded;
//! - **Ambiguous** / **Acceptable**: refused, or forwarded with unambiguous framing: exactly
//!   one framing header (or none without a body), `chunked` only, a complete body consistent
//!   with it, no header name carrying control bytes or spaces;
//! - **Compliant**: `200`, forwarded once with unambiguous framing.
//!
//! How a case becomes bytes: `{method} /proxy{uri} {version}\r\n`, `Host: <app>` unless the
//! case has its own, each header as `{name}:{value}\r\n` (values keep their own leading
//! blanks), a blank line, then a body that satisfies every reading at once: `0\r\n\r\n`
//! (the end of a chunked body) followed by more `x` than any `Content-Length` of the case
//! asks for. Whatever framing the server picks, the request ends; the rest is a second,
//! garbage request whose answer is ignored. YAML `\xNN` escapes below U+0100 are sent as the
//! single byte `NN` (the corpus means bytes), others as UTF-8.
//!
//! Counts: 159 cases, all run — Compliant 28, Acceptable 15, Ambiguous 58, Severe 58.
//! Outcomes (last run): Severe 58/58 refused; Ambiguous 41 refused, 17 forwarded cleanly;
//! Acceptable 13 refused, 2 forwarded cleanly; Compliant 21 forwarded, 7 refused by design
//! (listed in [`REFUSED_BY_DESIGN`]: the test checks that they are refused, and nothing
//! reached the target).

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

use crate::support::*;

/// Cases the guardian calls Compliant that this proxy refuses on purpose, with why. They are
/// still run: each must be refused with nothing forwarded.
const REFUSED_BY_DESIGN: [(&str, &str); 7] = [
    (
        "Correct TE OK",
        "`gzip, chunked`: 501, a coding other than chunked is never relayed (case A7)",
    ),
    (
        "Transfer-Encoding: identity and chunked OK",
        "`identity, chunked`: 501, as above",
    ),
    (
        "Multiple transfer encoding headers in a single request OK",
        "several codings: 501, as above",
    ),
    (
        "Different Transfer-Encoding headers",
        "gzip, deflate, identity, compress, chunked: 501, as above",
    ),
    (
        "Different Transfer-Encoding headers combined",
        "the same on one line: 501, as above",
    ),
    (
        "TE with custom parameters OK",
        "`chunked;custom_param`: hyper answers 400 (chunked takes no parameters)",
    ),
    (
        "Transfer-Encoding with a param: chunked;custom_param",
        "`gzip;`, `deflate;`, `chunked;custom_param`: hyper answers 400",
    ),
];

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    uri: String,
    method: String,
    version: String,
    headers: Vec<Field>,
    expected: Expected,
}

#[derive(Debug, Deserialize)]
struct Field {
    name: String,
    value: serde_yaml_ng::Value,
}

#[derive(Debug, Deserialize)]
struct Expected {
    tier: String,
}

/// The corpus means bytes by `\xNN`: characters below U+0100 become one byte each.
fn bytes_of(s: &str) -> Vec<u8> {
    if s.chars().all(|c| (c as u32) < 0x100) {
        s.chars().map(|c| c as u32 as u8).collect()
    } else {
        s.as_bytes().to_vec()
    }
}

fn value_text(v: &serde_yaml_ng::Value) -> String {
    match v {
        serde_yaml_ng::Value::String(s) => s.clone(),
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        serde_yaml_ng::Value::Bool(b) => b.to_string(),
        serde_yaml_ng::Value::Null => String::new(),
        other => panic!("unexpected header value {other:?}"),
    }
}

fn load() -> Vec<(String, Case)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/http-desync-guardian");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: Vec<Case> =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        cases.extend(parsed.into_iter().map(|c| (stem.clone(), c)));
    }
    cases
}

fn raw_request(case: &Case, app: &App) -> Vec<u8> {
    let mut req = bytes_of(&case.method);
    req.extend_from_slice(b" /proxy");
    req.extend(bytes_of(&case.uri));
    req.push(b' ');
    req.extend(bytes_of(&case.version));
    req.extend_from_slice(b"\r\n");
    if !case
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("host"))
    {
        req.extend_from_slice(format!("Host: {}\r\n", app.addr).as_bytes());
    }
    for h in &case.headers {
        req.extend(bytes_of(&h.name));
        req.push(b':');
        req.extend(bytes_of(&value_text(&h.value)));
        req.extend_from_slice(b"\r\n");
    }
    let longest = case
        .headers
        .iter()
        .filter_map(|h| value_text(&h.value).trim().parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    req.extend(std::iter::repeat_n(b'x', longest.max(1000) + 100));
    req
}

/// What happened to one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// 4xx/501 or closed, and nothing reached the target.
    Refused,
    /// Forwarded with clean framing.
    Forwarded,
}

/// A forwarded request whose framing is clean, or why not.
fn framing_problem(got: &Captured) -> Option<String> {
    let cl = got.count("content-length");
    let te = got.count("transfer-encoding");
    if cl + te > 1 {
        return Some("two framing headers".into());
    }
    if te == 1 && !got.one("transfer-encoding").eq_ignore_ascii_case("chunked") {
        return Some("a coding other than chunked".into());
    }
    if cl == 1 && got.one("content-length") != got.body.data.len().to_string() {
        return Some("Content-Length disagrees with the body".into());
    }
    if !got.body.data.is_empty() && cl + te == 0 {
        return Some("a body without framing".into());
    }
    if !got.body.complete {
        return Some("an incomplete body".into());
    }
    for (name, _) in &got.headers {
        if name.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Some(format!("header name {name:?} with control bytes or spaces"));
        }
    }
    None
}

#[tokio::test]
async fn n_desync_guardian_corpus() {
    let cases = load();
    assert_eq!(cases.len(), 159, "the corpus changed");
    for (name, _) in REFUSED_BY_DESIGN {
        assert!(
            cases.iter().any(|(_, c)| c.name == name),
            "{name} not in the corpus"
        );
    }
    let mut failures = Vec::new();
    let mut tally: BTreeMap<(String, Outcome), usize> = BTreeMap::new();
    for (file, case) in &cases {
        let up = Upstream::ok().await;
        let app = start_app(layer()).await;
        app.target(&up, "");
        let mut c = app.raw().await;
        let _ = c.try_send(&raw_request(case, &app)).await;
        let head = case.method == "HEAD";
        let status = c.response(head).await.map(|r| r.status);
        drop(c);
        // Whatever reached the target has arrived or ended by now.
        up.wait("upstream settled", |v| v.heads <= v.requests + v.eofs)
            .await;
        let reqs = up.requests();
        let tier = case.expected.tier.as_str();
        let id = format!("{file}: {:?} ({tier})", case.name);
        let refused = matches!(status, None | Some(400..=499) | Some(501)) && reqs.is_empty();
        let outcome = if refused {
            Outcome::Refused
        } else {
            Outcome::Forwarded
        };
        *tally.entry((tier.to_owned(), outcome)).or_default() += 1;
        let by_design = REFUSED_BY_DESIGN.iter().any(|(n, _)| *n == case.name);
        match tier {
            _ if by_design && !refused => failures.push(format!(
                "{id}: expected refused by design: status {status:?}, {} forwarded",
                reqs.len()
            )),
            _ if by_design => {}
            "Severe" if !refused => failures.push(format!(
                "{id}: not refused: status {status:?}, {} forwarded",
                reqs.len()
            )),
            "Compliant" if status != Some(200) || reqs.len() != 1 => {
                failures.push(format!("{id}: status {status:?}, {} forwarded", reqs.len()))
            }
            _ => {}
        }
        if reqs.len() > 1 {
            failures.push(format!("{id}: {} requests forwarded", reqs.len()));
        }
        for got in &reqs {
            if let Some(problem) = framing_problem(got) {
                failures.push(format!(
                    "{id}: forwarded with {problem}:\n{}",
                    got.head_str()
                ));
            }
        }
    }
    eprintln!("desync-guardian outcomes (tier, outcome) -> cases: {tally:#?}");
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
