//! [`ForwardedOrigin`]: the app's origin, rebuilt from `X-Forwarded-Proto` and
//! `X-Forwarded-Host`, for a target that calls the app back.

use std::{fmt, net::Ipv6Addr, str::FromStr};

use http::{HeaderMap, HeaderName, Uri, uri::Authority};

use crate::{
    jwt::Claims,
    rules::{
        headers::{X_FORWARDED_HOST, X_FORWARDED_PROTO},
        origin::PublicOrigin,
    },
};

/// The origin (`scheme://host[:port]`) the client used to reach the app, as the proxy
/// reports it in `X-Forwarded-Proto` and `X-Forwarded-Host`.
///
/// A target uses it to call the app back with the token it received, as the Atoti
/// document's `session` mode does, without knowing the app's URL.
///
/// The headers are validated: exactly one of each, the scheme `http` or `https`, the host a
/// plain authority (a DNS name or IP address and an optional port; no user info, no path,
/// no list of hops).
///
/// # Security
///
/// Never call back an origin nothing vouches for. The proxy always *replaces* these
/// headers, but unless the app declares its
/// [public origins](crate::ProxyLayer::public_origin), the host they name is the `Host`
/// the client sent, whatever it is; and a target that clients can also reach directly
/// receives whatever those clients send. A target that called such an origin back would
/// send the user's token to a server of the client's choosing and believe its answer.
/// Before calling back, check the origin against one of:
/// - the token's `iss`, with [`vouched_by`](Self::vouched_by), once the token is verified
///   (as [`VerifyProxyJwtLayer`](super::VerifyProxyJwtLayer) does, which puts the
///   [`Claims`] in the request extensions): with public origins set, the proxy refuses
///   (`421`) any other host and names the request's origin as `iss`;
/// - a list of the app's origins the target knows, with [`is`](Self::is).
///
/// # Example
///
/// ```
/// use http::HeaderMap;
/// use tower_identity_proxy::{proxy::PublicOrigin, verify::ForwardedOrigin};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-proto", "https".parse()?);
/// headers.insert("x-forwarded-host", "example.com:1337".parse()?);
/// let origin = ForwardedOrigin::from_headers(&headers)?;
/// assert_eq!(origin.to_string(), "https://example.com:1337");
/// assert_eq!(
///     origin.url("/api/whoami")?.to_string(),
///     "https://example.com:1337/api/whoami"
/// );
///
/// // Called back only if the app's origin list (or the verified token's `iss`) names it.
/// let app: PublicOrigin = "https://example.com:1337".parse()?;
/// assert!(origin.is(&app));
/// assert!(!origin.is(&"https://example.com".parse()?));
///
/// headers.insert("x-forwarded-host", "evil.com@example.com".parse()?);
/// assert!(ForwardedOrigin::from_headers(&headers).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedOrigin {
    https: bool,
    authority: Authority,
}

/// The forwarding headers are missing or not a plain origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidForwarded(&'static str);

impl fmt::Display for InvalidForwarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidForwarded {}

fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, InvalidForwarded> {
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(InvalidForwarded(
            "X-Forwarded-Proto and X-Forwarded-Host must each be sent once",
        ));
    };
    value
        .to_str()
        .map_err(|_| InvalidForwarded("a forwarding header is not ASCII"))
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return Ipv6Addr::from_str(inner).is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && host.split('.').all(|label| label.len() <= 63)
}

impl ForwardedOrigin {
    /// Reads and validates `X-Forwarded-Proto` and `X-Forwarded-Host`.
    ///
    /// # Errors
    ///
    /// [`InvalidForwarded`] when a header is missing or repeated, the scheme is not `http`
    /// or `https`, or the host is not a plain `host[:port]`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, InvalidForwarded> {
        let proto = single(headers, &X_FORWARDED_PROTO)?;
        let https = if proto.eq_ignore_ascii_case("https") {
            true
        } else if proto.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(InvalidForwarded(
                "X-Forwarded-Proto must be `http` or `https`",
            ));
        };
        let host = single(headers, &X_FORWARDED_HOST)?;
        let bad_host = InvalidForwarded("X-Forwarded-Host must be a plain `host[:port]`");
        if host.contains(['@', ',', '/', '?', '#', '\\']) {
            return Err(bad_host);
        }
        let authority = Authority::from_str(host).map_err(|_| bad_host.clone())?;
        if !valid_host(authority.host()) || (host.ends_with(':') && authority.port().is_none()) {
            return Err(bad_host);
        }
        if authority.as_str().contains(':')
            && !authority.as_str().ends_with(']')
            && authority.port_u16().is_none()
        {
            return Err(bad_host);
        }
        Ok(Self { https, authority })
    }

    /// Whether this is `origin`: the same scheme, host (whatever its letter case) and port
    /// (a missing one is the scheme's default).
    pub fn is(&self, origin: &PublicOrigin) -> bool {
        origin.matches(self.authority.as_str().as_bytes(), Some(self.https))
    }

    /// Whether the token whose `claims` these are vouches for this origin: its `iss` is this
    /// origin (as the proxy sets it when it knows the app's public origins). Verify the
    /// token before asking: an unverified `iss` is the sender's word.
    pub fn vouched_by(&self, claims: &Claims) -> bool {
        claims
            .iss
            .as_deref()
            .and_then(|iss| PublicOrigin::parse(iss).ok())
            .is_some_and(|iss| self.is(&iss))
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The host and optional port, e.g. `example.com:1337`.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The URL of `path_and_query` (starting with `/`) on the app.
    ///
    /// # Errors
    ///
    /// [`InvalidForwarded`] if `path_and_query` is not a valid origin-form target.
    pub fn url(&self, path_and_query: &str) -> Result<Uri, InvalidForwarded> {
        if !path_and_query.starts_with('/') {
            return Err(InvalidForwarded("the path must start with `/`"));
        }
        Uri::builder()
            .scheme(self.scheme())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| InvalidForwarded("the path is not valid in a URL"))
    }
}

impl fmt::Display for ForwardedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(proto: &[&str], host: &[&str]) -> Result<String, InvalidForwarded> {
        let mut headers = HeaderMap::new();
        for p in proto {
            headers.append(X_FORWARDED_PROTO.clone(), p.parse().unwrap());
        }
        for h in host {
            headers.append(X_FORWARDED_HOST.clone(), h.parse().unwrap());
        }
        ForwardedOrigin::from_headers(&headers).map(|o| o.to_string())
    }

    #[test]
    fn plain_origins_are_rebuilt() {
        assert_eq!(
            origin(&["https"], &["example.com:1337"]).unwrap(),
            "https://example.com:1337"
        );
        assert_eq!(
            origin(&["HTTP"], &["127.0.0.1"]).unwrap(),
            "http://127.0.0.1"
        );
        assert_eq!(
            origin(&["http"], &["[::1]:8080"]).unwrap(),
            "http://[::1]:8080"
        );
        assert_eq!(origin(&["http"], &["my_host"]).unwrap(), "http://my_host");
    }

    #[test]
    fn anything_else_is_refused() {
        for (proto, host) in [
            (&["ftp"][..], &["a.com"][..]),
            (&["javascript"], &["a.com"]),
            (&["https, http"], &["a.com"]),
            (&["https", "http"], &["a.com"]),
            (&[], &["a.com"]),
            (&["https"], &[]),
            (&["https"], &["a.com", "b.com"]),
            (&["https"], &["a.com, b.com"]),
            (&["https"], &["user@a.com"]),
            (&["https"], &["a.com/path"]),
            (&["https"], &["a.com?x"]),
            (&["https"], &["a.com#x"]),
            (&["https"], &["a.com:"]),
            (&["https"], &["a.com:99999"]),
            (&["https"], &["a.com:x"]),
            (&["https"], &[""]),
            (&["https"], &[":80"]),
            (&["https"], &["[zz]:80"]),
            (&["https"], &["a b.com"]),
            (&["https"], &["a\\b.com"]),
            (&["https"], &["a%2fb.com"]),
        ] {
            assert!(origin(proto, host).is_err(), "{proto:?} {host:?}");
        }
    }

    #[test]
    fn origins_are_vouched_for_by_iss_or_a_list() {
        let o = |proto: &str, host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(X_FORWARDED_PROTO.clone(), proto.parse().unwrap());
            headers.insert(X_FORWARDED_HOST.clone(), host.parse().unwrap());
            ForwardedOrigin::from_headers(&headers).unwrap()
        };
        let app = PublicOrigin::parse("https://app.example.com").unwrap();
        assert!(o("https", "app.example.com").is(&app));
        assert!(o("https", "App.Example.com:443").is(&app));
        assert!(!o("http", "app.example.com").is(&app));
        assert!(!o("https", "app.example.com:8443").is(&app));
        assert!(!o("https", "attacker.example").is(&app));
        let claims = |iss: Option<&str>| Claims {
            sub: "a".into(),
            authorities: vec![],
            iat: 0,
            exp: 0,
            iss: iss.map(str::to_owned),
            aud: None,
            jti: None,
            extra: Default::default(),
        };
        let origin = o("https", "app.example.com");
        assert!(origin.vouched_by(&claims(Some("https://app.example.com"))));
        assert!(!origin.vouched_by(&claims(Some("https://other.example"))));
        assert!(!origin.vouched_by(&claims(Some("not an origin"))));
        assert!(!origin.vouched_by(&claims(None)));
    }

    #[test]
    fn url_joins_a_path() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_PROTO.clone(), "http".parse().unwrap());
        headers.insert(X_FORWARDED_HOST.clone(), "app:8080".parse().unwrap());
        let o = ForwardedOrigin::from_headers(&headers).unwrap();
        assert_eq!(
            o.url("/api/whoami?x=1").unwrap().to_string(),
            "http://app:8080/api/whoami?x=1"
        );
        assert!(o.url("api").is_err());
        assert!(o.url("//evil.com/x").is_ok_and(|u| u.host() == Some("app")));
    }
}
