//! The claims of the identity token.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::jwt::subject::Identity;

/// The claims of a token signed by this crate.
///
/// `sub` and `authorities` are what Atoti Server sends; `iat` and `exp` are always set;
/// `iss`, `aud` and `jti` only when configured; `extra` holds claims added by a hook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user name.
    pub sub: String,
    /// The user's roles, sorted.
    pub authorities: Vec<String>,
    /// Issued at (seconds since the epoch), back-dated a few seconds for clock skew.
    pub iat: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// The issuer, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The audience, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// A unique token id, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Other claims.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Claims {
    /// The identity these claims carry, vouched for until `exp` (see
    /// [`Identity::valid_until`](Identity::valid_until)): a token signed for it does
    /// not outlive this one.
    pub fn identity(&self) -> Identity {
        Identity::new(self.sub.clone(), self.authorities.iter().cloned())
            .valid_until(std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.exp))
    }
}
