//! [`Target`]: a validated target URL, shared by the proxy path, the rewriting rules and
//! the client.

use std::{fmt, str::FromStr};

use http::{
    HeaderValue,
    uri::{Authority, Scheme, Uri},
};

use crate::{error::ConfigError, observability::record::Server};

/// A validated proxy target: `http` or `https`, a host, an optional port and base path; no
/// user info, query or fragment.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    scheme: Scheme,
    authority: Authority,
    /// The base path without its trailing slash: `""` for the root.
    base_path: String,
    display: String,
    /// Its `server.address` and `server.port` metric labels, made once.
    server: Server,
    /// Its scheme and authority, for the client's pools, with its `Host` header made once.
    origin: crate::client::Origin,
}

fn invalid(url: &str, reason: impl Into<std::borrow::Cow<'static, str>>) -> ConfigError {
    ConfigError::InvalidTarget {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

impl Target {
    /// Parses and validates a target URL.
    ///
    /// # Errors
    ///
    /// A [`ConfigError::InvalidTarget`] naming the problem when the URL cannot be parsed
    /// (spaces or control characters included), its scheme is not `http` or `https`, it has
    /// no host, an empty port or one of 65536 or more, or it carries user info, a query or a
    /// fragment; or when its base path breaks a rule of request paths: a dot-segment (`.`,
    /// `..`, also as `%2e`, or between `%2f`, `%5c` or `\\`), a NUL byte, a `%` not followed
    /// by two hex digits (`%u002e`), escapes that do not decode to UTF-8 (`%c0%ae`), or a
    /// double-encoded dot, slash or backslash (`%252e`, `%252f`, `%255c`).
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(invalid(url, "the URL is empty"));
        }
        if trimmed.contains('#') {
            return Err(invalid(url, "a target URL cannot have a fragment"));
        }
        if trimmed.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(invalid(
                url,
                "the URL contains spaces or control characters",
            ));
        }
        match trimmed.split_once("://") {
            Some((scheme, _))
                if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {}
            Some(_) => return Err(invalid(url, "the scheme must be http or https")),
            None if trimmed.contains(':') && !trimmed.starts_with('/') => {
                return Err(invalid(url, "the scheme must be http or https"));
            }
            None => return Err(invalid(url, "the URL must start with http:// or https://")),
        }
        let uri: Uri = trimmed
            .parse()
            .map_err(|_| invalid(url, "the URL cannot be parsed"))?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::HTTP,
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::HTTPS,
            Some(_) => return Err(invalid(url, "the scheme must be http or https")),
            None => return Err(invalid(url, "the URL must start with http:// or https://")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| invalid(url, "the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid(url, "a target URL cannot carry user info"));
        }
        if authority.host().is_empty() {
            return Err(invalid(url, "the URL has no host"));
        }
        if authority.as_str().ends_with(':') {
            return Err(invalid(url, "the URL has an empty port"));
        }
        if authority.as_str().len() > authority.host().len() && authority.port_u16().is_none() {
            return Err(invalid(url, "the port must be a number below 65536"));
        }
        if uri.query().is_some() || trimmed.contains('?') {
            return Err(invalid(url, "a target URL cannot have a query string"));
        }
        let path = uri.path();
        let base_path = path.trim_end_matches('/').to_owned();
        // The rules of a request's path (see `rewrite`): a base path such as
        // `/base%2f..%2f..` would otherwise lead every request out of it.
        if let Err(why) = crate::rules::rewrite::check_path(&base_path) {
            let why = why.trim_start_matches("The path ").trim_end_matches('.');
            return Err(invalid(url, format!("the base path {why}")));
        }
        let display = format!("{scheme}://{authority}{base_path}");
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let origin = crate::client::Origin::new(scheme.clone(), authority.clone())
            .ok_or_else(|| invalid(url, "the host cannot be sent as a Host header"))?;
        let server = Server::new(
            authority.host(),
            authority.port_u16().unwrap_or(default_port),
        );
        Ok(Self {
            scheme,
            authority,
            base_path,
            display,
            server,
            origin,
        })
    }

    /// The scheme, `http` or `https`.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Its scheme and authority, for the client's pools.
    pub(crate) fn origin(&self) -> &crate::client::Origin {
        &self.origin
    }

    /// The `Host` header of HTTP/1.1 requests to this target.
    pub(crate) fn host_header(&self) -> &HeaderValue {
        self.origin.host()
    }

    /// The target's metric labels.
    pub(crate) fn server(&self) -> &Server {
        &self.server
    }

    /// Whether requests to this target go over TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The host and port.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The base path without a trailing slash; empty for the root.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The normalised URL, e.g. `http://127.0.0.1:1991/base`.
    pub fn as_str(&self) -> &str {
        &self.display
    }
}

impl FromStr for Target {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Target").field(&self.display).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_names_the_port_unless_it_is_the_default() {
        for (url, host) in [
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://example.com:80/base", "example.com"),
            ("http://example.com", "example.com"),
            ("https://example.com:443/", "example.com"),
            ("https://example.com:80", "example.com:80"),
            ("http://[::1]:9000", "[::1]:9000"),
            ("http://[::1]", "[::1]"),
        ] {
            assert_eq!(Target::parse(url).unwrap().host_header(), host, "{url}");
        }
    }

    #[test]
    fn accepts_http_and_https_with_base_paths() {
        let t = Target::parse("http://localhost:1991").unwrap();
        assert_eq!(t.base_path(), "");
        assert_eq!(t.authority().as_str(), "localhost:1991");
        let t = Target::parse("HTTPS://custom.com:1991/base/").unwrap();
        assert!(t.is_https());
        assert_eq!(t.base_path(), "/base");
        assert_eq!(t.as_str(), "https://custom.com:1991/base");
        let t = Target::parse("http://[::1]:8080/a/b").unwrap();
        assert_eq!(t.base_path(), "/a/b");
    }

    #[test]
    fn refuses_invalid_urls_with_a_reason() {
        for (url, needle) in [
            ("ftp://x", "scheme"),
            ("unix:/tmp/sock|http://x", "scheme"),
            ("http://", "cannot be parsed"),
            ("not a url", "spaces"),
            ("localhost:8080", "scheme"),
            ("http://u:p@h/", "user info"),
            ("http://h/#frag", "fragment"),
            ("http://h/?q=1", "query"),
            ("http://h/p?", "query"),
            ("http://h:/", "port"),
            ("http://h:99999/", "port"),
            ("http://h:8x/", "port"),
            ("http://h/a/../b", "dot-segments"),
            ("http://h/base%2f..%2f..", "dot-segments"),
            ("http://h/base/%2e%2E", "dot-segments"),
            ("http://h/a%5c..", "dot-segments"),
            ("http://h/a%00", "NUL"),
            ("http://h/%252e%252e", "double-encoded"),
            ("http://h/%u002e", "malformed"),
            ("http://h/%c0%ae", "UTF-8"),
            ("", "empty"),
            ("/relative", "http://"),
        ] {
            let err = Target::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
