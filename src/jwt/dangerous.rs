//! Insecure modes, for local development only.
//!
//! [`InsecureUnsignedSigner`] produces unsigned tokens (`alg: none`), as the community
//! edition of Atoti Server does. Any client that can reach the target can forge such a
//! token, so a target must never trust one. Nothing in this crate falls back to it: it is
//! used only when named.
//!
//! # Example
//!
//! ```
//! use tower_identity_proxy::{ProxyLayer, jwt::dangerous::InsecureUnsignedSigner};
//!
//! let layer = ProxyLayer::uncached(InsecureUnsignedSigner::new());
//! # let _ = layer;
//! ```

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::jwt::{
    signer::{JwtSigner, SignError, Token, TokenPolicy},
    subject::Identity,
};

/// Produces unsigned JWTs (`{"alg":"none"}`, empty signature).
///
/// # Security
///
/// Anyone can forge these tokens. Use only where the target does not need to trust the
/// caller's identity.
#[derive(Clone, Debug, Default)]
pub struct InsecureUnsignedSigner {
    policy: TokenPolicy,
}

impl InsecureUnsignedSigner {
    /// Unsigned tokens with the default [`TokenPolicy`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the token policy.
    #[must_use]
    pub fn policy(mut self, policy: TokenPolicy) -> Self {
        self.policy = policy;
        self
    }
}

impl JwtSigner for InsecureUnsignedSigner {
    async fn sign(&self, identity: &Identity) -> Result<Token, SignError> {
        let (claims, issued, expires) = self.policy.claims(identity);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let jwt = format!("{header}.{}.", self.policy.encode_payload(&claims)?);
        self.policy.check_len(&jwt)?;
        Token::new(&jwt, issued, expires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unsigned_tokens_are_refused_by_verifiers() {
        let token = InsecureUnsignedSigner::new()
            .sign(&Identity::anonymous())
            .await
            .unwrap();
        assert!(token.as_str().ends_with('.'));
        let keys = crate::jwt::KeyPair::generate_ed25519().unwrap();
        assert!(keys.verifier().verify(token.as_str()).is_err());
    }
}
