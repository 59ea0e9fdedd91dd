//! The pure request rewriting (`rewrite_request`) and response rewriting
//! (`rewrite_response`), without sockets.
//!
//! Run: `cargo bench --bench rewrite`.

#![allow(clippy::expect_used)] // a benchmark that cannot set up should stop loudly

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use tower_identity_proxy::{
    __fuzzing::{Framing, RewriteConfig, rewrite_request, rewrite_response},
    Target,
};

fn rewrite(c: &mut Criterion) {
    let config = RewriteConfig::new("/proxy").expect("prefix");
    let target = Target::parse("http://127.0.0.1:1991/base").expect("target");

    // What wrk/curl send: a short GET.
    let (small, ()) = Request::get("/proxy/some/path?foo=bar")
        .header("host", "127.0.0.1:8080")
        .body(())
        .expect("request")
        .into_parts();

    // What a browser sends: a dozen headers, cookies, credentials, a Connection list.
    let (browser, ()) = Request::get("/proxy/api/v1/cubes/sales/query?fields=a,b,c&limit=100")
        .header("host", "app.example.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .header("accept-language", "en-GB,en;q=0.5")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("authorization", "Basic QWxpY2U6YWJjZGVmMTIzNDU2")
        .header("cookie", "JSESSIONID=0123456789ABCDEF; theme=dark")
        .header("connection", "keep-alive")
        .header("referer", "https://app.example.com/ui/")
        .header("sec-fetch-dest", "empty")
        .header("sec-fetch-mode", "cors")
        .header("x-forwarded-for", "203.0.113.7")
        .header("te", "trailers")
        .body(())
        .expect("request")
        .into_parts();

    let (response, ()) = Response::builder()
        .header("content-type", "text/plain")
        .header("content-length", "12")
        .header("date", "Sat, 28 Nov 2026 12:00:00 GMT")
        .header("server", "nginx")
        .header("connection", "keep-alive")
        .body(())
        .expect("response")
        .into_parts();

    let mut group = c.benchmark_group("rewrite");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    group.bench_function("request/small-get", |b| {
        b.iter(|| {
            rewrite_request(black_box(&small), &target, &config, Framing::Empty).expect("rewritten")
        })
    });
    group.bench_function("request/browser-get", |b| {
        b.iter(|| {
            rewrite_request(black_box(&browser), &target, &config, Framing::Empty)
                .expect("rewritten")
        })
    });
    group.bench_function("response/nginx-200", |b| {
        b.iter_batched_ref(
            || response.clone(),
            |parts| rewrite_response(black_box(parts), &config),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
