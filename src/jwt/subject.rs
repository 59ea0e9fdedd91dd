//! [`Identity`]: the caller, the subject of the tokens this crate signs and verifies.
//!
//! It lives with the tokens, below the extractors of [`identity`](crate::identity) that
//! produce it; its public path is [`crate::identity::Identity`].

use std::{fmt, sync::Arc, time::SystemTime};

use serde::{Deserialize, Serialize};

/// The caller: a name and a sorted, de-duplicated list of roles.
///
/// Immutable and cheap to clone (the name and roles are shared): an extractor that gives
/// every request the same identity, such as [`Anonymous`](crate::identity::Anonymous), hands it out without allocating.
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "IdentityFields", into = "IdentityFields")]
pub struct Identity {
    pub(crate) name: Arc<str>,
    pub(crate) roles: Arc<[String]>,
    /// See [`Identity::valid_until`].
    valid_until: Option<SystemTime>,
    /// See [`Identity::issued_by`].
    issuer: Option<Arc<str>>,
    /// The name, roles, bound and issuer hashed once, when the identity is made: the token cache
    /// looks an identity up on every proxied request, and a fixed identity ([`Anonymous`](crate::identity::Anonymous),
    /// a user of [`CredentialStore`](crate::identity::CredentialStore)) is then never hashed again.
    digest: u64,
}

impl Identity {
    pub(crate) fn from_parts(
        name: Arc<str>,
        roles: Arc<[String]>,
        valid_until: Option<SystemTime>,
        issuer: Option<Arc<str>>,
    ) -> Self {
        // Keyed at random once per process, as `HashMap`'s own hashing: names can come from
        // clients, and collisions must not be something they can aim for.
        static KEY: std::sync::LazyLock<std::hash::RandomState> =
            std::sync::LazyLock::new(std::hash::RandomState::new);
        let digest = std::hash::BuildHasher::hash_one(
            &*KEY,
            (&*name, &*roles, valid_until, issuer.as_deref()),
        );
        Self {
            name,
            roles,
            valid_until,
            issuer,
            digest,
        }
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        // A fixed identity (`Anonymous`, a stored user) is compared with a clone of itself:
        // the same allocations, no bytes to compare.
        self.digest == other.digest
            && (Arc::ptr_eq(&self.name, &other.name) || self.name == other.name)
            && (Arc::ptr_eq(&self.roles, &other.roles) || self.roles == other.roles)
            && self.valid_until == other.valid_until
            && self.issuer == other.issuer
    }
}

impl Eq for Identity {}

impl std::hash::Hash for Identity {
    /// Writes the digest of the name, roles and bound, computed when the identity was made:
    /// equal identities write the same.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

/// How an [`Identity`] is (de)serialised: `{"name": "…", "roles": ["…"]}`.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Identity")]
struct IdentityFields {
    name: String,
    roles: Vec<String>,
}

impl From<IdentityFields> for Identity {
    /// Sorts and de-duplicates the roles, as [`Identity::new`]: serialised data (a session
    /// store, another service) may list them in any order.
    fn from(fields: IdentityFields) -> Self {
        Self::new(fields.name, fields.roles)
    }
}

impl From<Identity> for IdentityFields {
    fn from(identity: Identity) -> Self {
        Self {
            name: identity.name.to_string(),
            roles: identity.roles.to_vec(),
        }
    }
}

impl Identity {
    /// The name of anonymous callers, as Spring Security and Atoti Server call them.
    pub const ANONYMOUS_USER: &'static str = "anonymousUser";

    /// A new identity; roles are sorted and de-duplicated.
    pub fn new<N, R, I>(name: N, roles: I) -> Self
    where
        N: Into<String>,
        R: Into<String>,
        I: IntoIterator<Item = R>,
    {
        let mut roles: Vec<String> = roles.into_iter().map(Into::into).collect();
        roles.sort_unstable();
        roles.dedup();
        Self::from_parts(name.into().into(), roles.into(), None, None)
    }

    /// The same caller, vouched for only until `at`: a token signed for this identity
    /// expires no later, whatever the signer's lifetime.
    ///
    /// [`Claims::identity`](crate::jwt::Claims::identity) bounds the identity it reads from a
    /// token by that token's `exp`, so [`BearerJwt`](crate::identity::BearerJwt) identities carry their token's expiry:
    /// a token that comes back to the proxy (a target calling the app back) is re-signed
    /// with its own expiry at most, and a holder cannot refresh it for ever by presenting
    /// each new token in turn. An earlier bound already set is kept.
    #[must_use]
    pub fn valid_until(self, at: SystemTime) -> Self {
        let at = self.valid_until.map_or(at, |was| was.min(at));
        Self::from_parts(self.name, self.roles, Some(at), self.issuer)
    }

    /// The same caller, to be vouched for by `issuer`: a token signed for this identity
    /// carries it as `iss`, instead of the one the signer's
    /// [`TokenPolicy::issuer`](crate::jwt::TokenPolicy::issuer) names.
    ///
    /// The proxy sets it when the layer knows the app's
    /// [public origins](crate::ProxyLayer::public_origin): each token then names the origin
    /// its request came through, which a target checks before it calls the app back there
    /// (see [`ForwardedOrigin`](crate::verify::ForwardedOrigin)). Identities with different
    /// issuers never share a cached token.
    #[must_use]
    pub fn issued_by(self, issuer: impl Into<Arc<str>>) -> Self {
        Self::from_parts(self.name, self.roles, self.valid_until, Some(issuer.into()))
    }

    /// The issuer set by [`issued_by`](Self::issued_by), if any.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The bound set by [`valid_until`](Self::valid_until), if any.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.valid_until
    }

    /// `anonymousUser` with `ROLE_ANONYMOUS`.
    pub fn anonymous() -> Self {
        Self::new(Self::ANONYMOUS_USER, ["ROLE_ANONYMOUS"])
    }

    /// The user name, the JWT's `sub`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The roles, sorted: the JWT's `authorities`.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles
            .binary_search_by(|r| r.as_str().cmp(role))
            .is_ok()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Identity");
        d.field("name", &self.name).field("roles", &self.roles);
        if let Some(at) = self.valid_until {
            d.field("valid_until", &at);
        }
        if let Some(issuer) = &self.issuer {
            d.field("issuer", issuer);
        }
        d.finish()
    }
}
