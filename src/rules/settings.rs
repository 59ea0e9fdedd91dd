//! Validated values for the proxy's settings: [`Prefix`], [`ForwardedProto`] and
//! [`Pseudonym`]. Each is checked when it is made, so the builder that takes them cannot
//! fail.

use std::{fmt, str::FromStr};

use http::HeaderValue;

use crate::error::ConfigError;

/// The path prefix a [`ProxyLayer`](crate::ProxyLayer) takes over, validated.
///
/// A prefix starts with `/`, is not `/` alone, does not end with `/`, holds only letters,
/// digits, `/`, `-`, `.`, `_` and `~`, and has no empty (`//`) or dot (`.`, `..`) segment.
///
/// ```
/// use tower_identity_proxy::proxy::Prefix;
///
/// let prefix: Prefix = "/api/proxy".parse()?;
/// assert_eq!(prefix.as_str(), "/api/proxy");
/// assert!(Prefix::new("/api/").is_err());
/// assert!(Prefix::new("/").is_err());
/// # Ok::<(), tower_identity_proxy::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Prefix(String);

impl Prefix {
    /// Validates `prefix`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPrefix`], naming what is wrong, for a prefix that breaks the
    /// rules above.
    pub fn new(prefix: &str) -> Result<Self, ConfigError> {
        let fail = |reason| {
            Err(ConfigError::InvalidPrefix {
                prefix: prefix.to_owned(),
                reason,
            })
        };
        if !prefix.starts_with('/') {
            return fail("the prefix must start with '/'");
        }
        if prefix.len() < 2 {
            return fail("the prefix cannot be '/' alone: it would take over every request");
        }
        if prefix.ends_with('/') {
            return fail("the prefix must not end with '/'");
        }
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
        {
            return fail("the prefix may hold only letters, digits, '/', '-', '.', '_' and '~'");
        }
        if prefix.contains("//") || prefix.split('/').any(|s| s == "." || s == "..") {
            return fail("the prefix cannot contain empty or dot segments");
        }
        Ok(Self(prefix.to_owned()))
    }

    /// The prefix, e.g. `/proxy`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Prefix {
    /// `/proxy`.
    fn default() -> Self {
        Self("/proxy".to_owned())
    }
}

impl FromStr for Prefix {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Prefix").field(&self.0).finish()
    }
}

/// The scheme clients use to reach the app, sent to the target as `X-Forwarded-Proto`.
///
/// ```
/// use tower_identity_proxy::proxy::ForwardedProto;
///
/// assert_eq!("https".parse::<ForwardedProto>()?, ForwardedProto::Https);
/// assert!("ftp".parse::<ForwardedProto>().is_err());
/// # Ok::<(), tower_identity_proxy::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ForwardedProto {
    /// `http` (the default).
    #[default]
    Http,
    /// `https`: the app is served over TLS, by itself or behind a TLS terminator.
    Https,
}

impl ForwardedProto {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    pub(crate) fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

impl FromStr for ForwardedProto {
    type Err = ConfigError;

    /// `http` or `https`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("http") {
            Ok(Self::Http)
        } else if s.eq_ignore_ascii_case("https") {
            Ok(Self::Https)
        } else {
            Err(ConfigError::InvalidSetting {
                name: "forwarded proto",
                reason: "X-Forwarded-Proto must be http or https".into(),
            })
        }
    }
}

impl fmt::Display for ForwardedProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name this proxy gives itself in `Via` (RFC 9110 §7.6.3), also used to detect loops:
/// a non-empty HTTP token.
///
/// ```
/// use tower_identity_proxy::proxy::Pseudonym;
///
/// let name: Pseudonym = "gateway-1".parse()?;
/// assert_eq!(name.as_str(), "gateway-1");
/// assert!(Pseudonym::new("two words").is_err());
/// # Ok::<(), tower_identity_proxy::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pseudonym(String);

impl Pseudonym {
    /// Validates `pseudonym`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] unless it is a non-empty HTTP token.
    pub fn new(pseudonym: &str) -> Result<Self, ConfigError> {
        let valid = !pseudonym.is_empty()
            && pseudonym
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'*+^`|".contains(&b));
        if !valid {
            return Err(ConfigError::InvalidSetting {
                name: "via pseudonym",
                reason: "a Via pseudonym must be a non-empty HTTP token".into(),
            });
        }
        Ok(Self(pseudonym.to_owned()))
    }

    /// A random pseudonym: `tip-` followed by twelve random characters.
    pub(crate) fn random() -> Self {
        // Random base64url characters are token characters.
        Self(format!("tip-{}", &crate::jwt::signer::random_id()[..12]))
    }

    /// The pseudonym.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `Via` values naming this proxy for HTTP/1.0, HTTP/1.1 and HTTP/2.
    pub(crate) fn via_values(&self) -> [HeaderValue; 3] {
        // A token after a protocol version: always a valid header value.
        let via = |proto: &str| {
            HeaderValue::try_from(format!("{proto} {}", self.0))
                .unwrap_or_else(|_| HeaderValue::from_static("1.1 tower-identity-proxy"))
        };
        [via("1.0"), via("1.1"), via("2")]
    }
}

impl FromStr for Pseudonym {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pseudonym").field(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        for bad in [
            "", "/", "proxy", "/proxy/", "/a//b", "/a/../b", "/./a", "/a b", "/a?b",
        ] {
            assert!(Prefix::new(bad).is_err(), "{bad:?}");
        }
        for good in ["/proxy", "/api/proxy", "/a-b_c.d~e"] {
            assert_eq!(Prefix::new(good).unwrap().as_str(), good);
        }
        assert_eq!(Prefix::default().as_str(), "/proxy");
    }

    #[test]
    fn pseudonyms_are_http_tokens() {
        for bad in ["", "a b", "a,b", "a/b", "é"] {
            assert!(Pseudonym::new(bad).is_err(), "{bad:?}");
        }
        let random = Pseudonym::random();
        assert!(Pseudonym::new(random.as_str()).is_ok());
        assert_eq!(random.via_values()[1], format!("1.1 {random}").as_str());
    }

    #[test]
    fn forwarded_proto_is_http_or_https() {
        assert_eq!(
            "HTTP".parse::<ForwardedProto>().unwrap(),
            ForwardedProto::Http
        );
        assert_eq!(ForwardedProto::Https.header_value(), "https");
        assert!("wss".parse::<ForwardedProto>().is_err());
    }
}
