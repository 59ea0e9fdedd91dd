//! The rules of an intermediary, applied to request and response heads without sockets:
//! hop-by-hop removal (RFC 9110 §7.6.1), `Via` (§7.6.3), the `X-Forwarded-*` headers the
//! proxy sets, path mapping under the prefix, which cookies and response headers cross the
//! proxy.
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, HeaderValue, header};
//! use tower_identity_proxy::rules::remove_hop_by_hop;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret"));
//! headers.insert("x-secret", HeaderValue::from_static("1"));
//! headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
//! remove_hop_by_hop(&mut headers);
//! assert_eq!(headers.len(), 1); // only `Accept` is left
//! ```

pub(crate) mod headers;
pub(crate) mod origin;
pub(crate) mod rewrite;
pub(crate) mod settings;

pub use headers::{
    CookiePolicy, ResponsePolicy, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
    remove_hop_by_hop,
};
