//! Key material: [`KeyPair`] (read from PEM or generated), [`PublicKey`], [`Algorithm`], and
//! the JWK form of a public key with its RFC 7638 thumbprint, used as `kid`.
//!
//! Keys are parsed once, when the `KeyPair` is built, and signing reuses the parsed key.
//! Private key material never appears in `Debug` output or in logs.

use std::{fmt, sync::Arc};

use aws_lc_rs::{
    digest,
    encoding::AsDer,
    rand::SystemRandom,
    rsa::KeySize,
    signature::{self as sig, KeyPair as _},
};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer, pem::PemObject};
use serde_json::{Value, json};

use crate::error::ConfigError;

/// A JWS signing algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512, the default (as Atoti Server signs).
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// The name used in the JWS `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    /// Parses a JWS `alg` name; `none` and the HMAC algorithms are not algorithms here.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::RS256 => A::RS256,
            Self::RS384 => A::RS384,
            Self::RS512 => A::RS512,
            Self::PS256 => A::PS256,
            Self::PS384 => A::PS384,
            Self::PS512 => A::PS512,
            Self::ES256 => A::ES256,
            Self::ES384 => A::ES384,
            Self::EdDSA => A::EdDSA,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The elliptic curves supported for ECDSA keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Curve {
    /// NIST P-256, for ES256.
    P256,
    /// NIST P-384, for ES384.
    P384,
}

enum PrivateKey {
    Rsa(sig::RsaKeyPair),
    Ec(sig::EcdsaKeyPair, Curve),
    Ed(sig::Ed25519KeyPair),
}

#[derive(Clone, PartialEq, Eq)]
enum JwkParams {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Ed {
        x: Vec<u8>,
    },
}

/// The public half of a key: what verifiers and the JWKS need.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: Arc<PublicInner>,
}

#[derive(PartialEq, Eq)]
struct PublicInner {
    spki_der: Vec<u8>,
    params: JwkParams,
    kid: String,
}

/// A private key, parsed once, with its public key and `kid`.
///
/// Cheap to clone. `Debug` shows the key type and `kid` only.
///
/// # Example
///
/// ```
/// use tower_identity_proxy::jwt::{Algorithm, KeyPair};
///
/// // In a real deployment, read the PEM files of a key made with
/// // `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072`.
/// let generated = KeyPair::generate_rsa(2048)?;
/// let keys = KeyPair::from_pem(
///     generated.private_key_pem().as_bytes(),
///     Some(generated.public_key_pem().as_bytes()),
/// )?;
/// assert_eq!(keys.kid(), generated.kid());
/// assert!(keys.supports(Algorithm::RS512));
/// assert!(!format!("{keys:?}").contains("PRIVATE"));
/// # Ok::<(), tower_identity_proxy::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct KeyPair {
    private: Arc<PrivateKey>,
    public: PublicKey,
}

fn key_err(msg: &'static str) -> ConfigError {
    ConfigError::InvalidKey(msg.into())
}

impl KeyPair {
    /// Reads a private key from PEM (PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or PKCS#8
    /// `PRIVATE KEY`, for RSA, P-256, P-384 or Ed25519) and, when given, checks that the public
    /// key PEM (SPKI `PUBLIC KEY`) belongs to it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] when the PEM cannot be read, the key type is not supported,
    /// an RSA key is shorter than 2048 bits, or the public key does not match.
    pub fn from_pem(private_pem: &[u8], public_pem: Option<&[u8]>) -> Result<Self, ConfigError> {
        let der = PrivateKeyDer::from_pem_slice(private_pem)
            .map_err(|_| key_err("no private key in the PEM data"))?;
        let keys = Self::from_private_der(&der)?;
        if let Some(public_pem) = public_pem {
            let spki = SubjectPublicKeyInfoDer::from_pem_slice(public_pem)
                .map_err(|_| key_err("no public key (SPKI `PUBLIC KEY`) in the PEM data"))?;
            if spki.as_ref() != keys.public.inner.spki_der.as_slice() {
                return Err(key_err("the public key does not match the private key"));
            }
        }
        Ok(keys)
    }

    fn from_private_der(der: &PrivateKeyDer<'_>) -> Result<Self, ConfigError> {
        let private = match der {
            PrivateKeyDer::Pkcs1(d) => PrivateKey::Rsa(
                sig::RsaKeyPair::from_der(d.secret_pkcs1_der())
                    .map_err(|_| key_err("the PKCS#1 RSA private key cannot be parsed"))?,
            ),
            PrivateKeyDer::Sec1(d) => {
                let bytes = d.secret_sec1_der();
                if let Ok(k) = sig::EcdsaKeyPair::from_private_key_der(
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                    bytes,
                ) {
                    PrivateKey::Ec(k, Curve::P256)
                } else {
                    let k = sig::EcdsaKeyPair::from_private_key_der(
                        &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                        bytes,
                    )
                    .map_err(|_| key_err("the EC private key is not on P-256 or P-384"))?;
                    PrivateKey::Ec(k, Curve::P384)
                }
            }
            PrivateKeyDer::Pkcs8(d) => {
                let bytes = d.secret_pkcs8_der();
                if let Ok(k) = sig::RsaKeyPair::from_pkcs8(bytes) {
                    PrivateKey::Rsa(k)
                } else if let Ok(k) =
                    sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, bytes)
                {
                    PrivateKey::Ec(k, Curve::P256)
                } else if let Ok(k) =
                    sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, bytes)
                {
                    PrivateKey::Ec(k, Curve::P384)
                } else if let Ok(k) = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes) {
                    PrivateKey::Ed(k)
                } else {
                    return Err(key_err(
                        "the PKCS#8 key is not an RSA, P-256, P-384 or Ed25519 private key",
                    ));
                }
            }
            _ => return Err(key_err("unsupported private key format")),
        };
        Self::from_parsed(private)
    }

    fn from_parsed(private: PrivateKey) -> Result<Self, ConfigError> {
        let (spki, params) = match &private {
            PrivateKey::Rsa(k) => {
                if k.public_modulus_len() < 256 {
                    return Err(key_err("RSA keys must have at least 2048 bits"));
                }
                let p = k.public_key();
                let spki = p
                    .as_der()
                    .map_err(|_| key_err("cannot encode the RSA public key"))?;
                let params = JwkParams::Rsa {
                    n: p.modulus().big_endian_without_leading_zero().to_vec(),
                    e: p.exponent().big_endian_without_leading_zero().to_vec(),
                };
                (spki.as_ref().to_vec(), params)
            }
            PrivateKey::Ec(k, curve) => {
                let p = k.public_key();
                let spki = p
                    .as_der()
                    .map_err(|_| key_err("cannot encode the EC public key"))?;
                let point: &[u8] = p.as_ref();
                let coord = (point.len() - 1) / 2;
                if point.first() != Some(&4) || point.len() != 1 + 2 * coord {
                    return Err(key_err("unexpected EC public key encoding"));
                }
                let params = JwkParams::Ec {
                    curve: *curve,
                    x: point[1..=coord].to_vec(),
                    y: point[1 + coord..].to_vec(),
                };
                (spki.as_ref().to_vec(), params)
            }
            PrivateKey::Ed(k) => {
                let p = k.public_key();
                let spki = p
                    .as_der()
                    .map_err(|_| key_err("cannot encode the Ed25519 public key"))?;
                (
                    spki.as_ref().to_vec(),
                    JwkParams::Ed {
                        x: p.as_ref().to_vec(),
                    },
                )
            }
        };
        let kid = thumbprint(&params);
        Ok(Self {
            private: Arc::new(private),
            public: PublicKey {
                inner: Arc::new(PublicInner {
                    spki_der: spki,
                    params,
                    kid,
                }),
            },
        })
    }

    /// Generates a fresh RSA key of 2048, 3072 or 4096 bits (Atoti Server uses 3072).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] for another size.
    pub fn generate_rsa(bits: usize) -> Result<Self, ConfigError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => return Err(key_err("RSA key size must be 2048, 3072 or 4096 bits")),
        };
        let k =
            sig::RsaKeyPair::generate(size).map_err(|_| key_err("RSA key generation failed"))?;
        Self::from_parsed(PrivateKey::Rsa(k))
    }

    /// Generates a fresh ECDSA key on the given curve.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] if the generation fails.
    pub fn generate_ec(curve: Curve) -> Result<Self, ConfigError> {
        let alg = match curve {
            Curve::P256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            Curve::P384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        };
        let k =
            sig::EcdsaKeyPair::generate(alg).map_err(|_| key_err("EC key generation failed"))?;
        Self::from_parsed(PrivateKey::Ec(k, curve))
    }

    /// Generates a fresh Ed25519 key.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] if the generation fails.
    pub fn generate_ed25519() -> Result<Self, ConfigError> {
        let k = sig::Ed25519KeyPair::generate()
            .map_err(|_| key_err("Ed25519 key generation failed"))?;
        Self::from_parsed(PrivateKey::Ed(k))
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id: the RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key.
    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as a target needs it.
    pub fn public_key_pem(&self) -> String {
        self.public.to_pem()
    }

    /// The private key as PKCS#8 PEM, to save a generated key.
    ///
    /// # Security
    ///
    /// This is the secret that lets anyone sign identities the targets will trust: write
    /// it only to a file readable by the app alone, never to logs.
    pub fn private_key_pem(&self) -> String {
        let der = match &*self.private {
            PrivateKey::Rsa(k) => k.as_der().map(|d| d.as_ref().to_vec()),
            PrivateKey::Ec(k, _) => k.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
            PrivateKey::Ed(k) => k.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
        };
        // Encoding a key that was parsed or generated by the same library cannot fail.
        pem_encode("PRIVATE KEY", &der.unwrap_or_default())
    }

    /// Whether this key can sign with `alg`.
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.public.supports(alg)
    }

    /// The algorithm this key signs with by default: RS512 for RSA (as Atoti Server does),
    /// ES256/ES384 for EC keys, EdDSA for Ed25519.
    pub fn default_algorithm(&self) -> Algorithm {
        self.public.default_algorithm()
    }

    /// Signs `message` (the JWS signing input) with `alg`.
    pub(crate) fn sign(&self, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, SignatureError> {
        match (&*self.private, alg) {
            (PrivateKey::Rsa(k), _) => {
                let padding: &'static dyn sig::RsaEncoding = match alg {
                    Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                    Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                    Algorithm::PS512 => &sig::RSA_PSS_SHA512,
                    _ => return Err(SignatureError),
                };
                let mut out = vec![0; k.public_modulus_len()];
                k.sign(padding, &SystemRandom::new(), message, &mut out)
                    .map_err(|_| SignatureError)?;
                Ok(out)
            }
            (PrivateKey::Ec(k, Curve::P256), Algorithm::ES256)
            | (PrivateKey::Ec(k, Curve::P384), Algorithm::ES384) => k
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignatureError),
            (PrivateKey::Ed(k), Algorithm::EdDSA) => Ok(k.sign(message).as_ref().to_vec()),
            _ => Err(SignatureError),
        }
    }
}

/// The signature operation failed (wrong algorithm for the key, or a crypto failure).
#[derive(Debug)]
pub(crate) struct SignatureError;

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("type", &self.public.key_type())
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Reads a public key from SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] when the PEM holds no supported public key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|_| key_err("no public key (SPKI `PUBLIC KEY`) in the PEM data"))?;
        Self::from_spki_der(spki.as_ref())
    }

    /// Reads a public key from SPKI DER.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] when the DER holds no supported public key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, ConfigError> {
        use aws_lc_rs::signature::ParsedPublicKey;
        // Identify the key by the algorithms that accept it.
        let mut spki_der = der.to_vec();
        let params = if let Ok(k) = aws_lc_rs::rsa::PublicKey::from_der(der) {
            let n = k.modulus().big_endian_without_leading_zero().to_vec();
            if n.len() < 256 {
                return Err(key_err("RSA keys must have at least 2048 bits"));
            }
            // Accept PKCS#1 `RSAPublicKey` too, and keep the SPKI form.
            if let Ok(spki) = k.as_der() {
                spki_der = spki.as_ref().to_vec();
            }
            JwkParams::Rsa {
                n,
                e: k.exponent().big_endian_without_leading_zero().to_vec(),
            }
        } else if ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, der).is_ok() {
            // The SPKI ends with the BIT STRING holding the uncompressed point.
            ec_params(&der[der.len().saturating_sub(65)..], Curve::P256)?
        } else if ParsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, der).is_ok() {
            ec_params(&der[der.len().saturating_sub(97)..], Curve::P384)?
        } else if ParsedPublicKey::new(&sig::ED25519, der).is_ok() && der.len() >= 32 {
            JwkParams::Ed {
                x: der[der.len() - 32..].to_vec(),
            }
        } else {
            return Err(key_err(
                "the public key is not an RSA, P-256, P-384 or Ed25519 key",
            ));
        };
        let kid = thumbprint(&params);
        Ok(Self {
            inner: Arc::new(PublicInner {
                spki_der,
                params,
                kid,
            }),
        })
    }

    /// The key id: the RFC 7638 JWK thumbprint of this key.
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The key as SPKI PEM.
    pub fn to_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.inner.spki_der)
    }

    /// The key as SPKI DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.inner.spki_der
    }

    /// Whether this key verifies signatures made with `alg`.
    pub fn supports(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match &self.inner.params {
            JwkParams::Rsa { .. } => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            JwkParams::Ec {
                curve: Curve::P256, ..
            } => alg == ES256,
            JwkParams::Ec {
                curve: Curve::P384, ..
            } => alg == ES384,
            JwkParams::Ed { .. } => alg == EdDSA,
        }
    }

    /// RS512 for RSA, ES256/ES384 for EC, EdDSA for Ed25519.
    pub fn default_algorithm(&self) -> Algorithm {
        match &self.inner.params {
            JwkParams::Rsa { .. } => Algorithm::RS512,
            JwkParams::Ec {
                curve: Curve::P256, ..
            } => Algorithm::ES256,
            JwkParams::Ec {
                curve: Curve::P384, ..
            } => Algorithm::ES384,
            JwkParams::Ed { .. } => Algorithm::EdDSA,
        }
    }

    fn key_type(&self) -> &'static str {
        match &self.inner.params {
            JwkParams::Rsa { .. } => "RSA",
            JwkParams::Ec { .. } => "EC",
            JwkParams::Ed { .. } => "OKP",
        }
    }

    /// The RFC 7517 JWK of this key for `alg`, with `kid` and `use: "sig"`.
    pub fn to_jwk(&self, alg: Algorithm) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let kid = self.kid();
        match &self.inner.params {
            JwkParams::Rsa { n, e } => json!({
                "kty": "RSA", "use": "sig", "alg": alg.as_str(), "kid": kid,
                "n": b64(n), "e": b64(e),
            }),
            JwkParams::Ec { curve, x, y } => json!({
                "kty": "EC", "use": "sig", "alg": alg.as_str(), "kid": kid,
                "crv": curve_name(*curve), "x": b64(x), "y": b64(y),
            }),
            JwkParams::Ed { x } => json!({
                "kty": "OKP", "use": "sig", "alg": alg.as_str(), "kid": kid,
                "crv": "Ed25519", "x": b64(x),
            }),
        }
    }

    /// Reads a public key from its RFC 7517 JWK form (`kty` `RSA` with `n`/`e`, `EC` with
    /// `crv` P-256 or P-384 and `x`/`y`, or `OKP` with `crv` Ed25519 and `x`).
    ///
    /// The key's [`kid`](Self::kid) is its RFC 7638 thumbprint, whatever `kid` the JWK
    /// carries. Members other than the key's own (`kid`, `alg`, `use`) are not checked here.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] for another key type (`oct` secrets included), a missing
    /// or badly encoded member, or an RSA key shorter than 2048 bits.
    pub fn from_jwk(jwk: &Value) -> Result<Self, ConfigError> {
        let member = |name: &'static str| -> Result<Vec<u8>, ConfigError> {
            let text = jwk.get(name).and_then(Value::as_str).ok_or_else(|| {
                ConfigError::InvalidKey(format!("the JWK has no `{name}`").into())
            })?;
            URL_SAFE_NO_PAD.decode(text).map_err(|_| {
                ConfigError::InvalidKey(format!("the JWK's `{name}` is not base64url").into())
            })
        };
        let crv = jwk.get("crv").and_then(Value::as_str);
        let spki = match (jwk.get("kty").and_then(Value::as_str), crv) {
            (Some("RSA"), _) => {
                let components = sig::RsaPublicKeyComponents {
                    n: member("n")?,
                    e: member("e")?,
                };
                components
                    .as_der()
                    .map_err(|_| key_err("the JWK's RSA modulus or exponent is not valid"))?
                    .as_ref()
                    .to_vec()
            }
            (Some("EC"), Some("P-256")) => {
                ec_spki(SPKI_P256_PREFIX, 32, member("x")?, member("y")?)?
            }
            (Some("EC"), Some("P-384")) => {
                ec_spki(SPKI_P384_PREFIX, 48, member("x")?, member("y")?)?
            }
            (Some("OKP"), Some("Ed25519")) => {
                let x = member("x")?;
                if x.len() != 32 {
                    return Err(key_err("the JWK's Ed25519 `x` is not 32 bytes"));
                }
                [SPKI_ED25519_PREFIX, &x].concat()
            }
            _ => {
                return Err(key_err(
                    "the JWK is not an RSA, EC P-256/P-384 or OKP Ed25519 public key",
                ));
            }
        };
        Self::from_spki_der(&spki)
    }

    /// A `jsonwebtoken` decoding key for this public key.
    pub(crate) fn decoding_key(&self) -> jsonwebtoken::DecodingKey {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match &self.inner.params {
            JwkParams::Rsa { n, e } => jsonwebtoken::DecodingKey::from_rsa_raw_components(n, e),
            JwkParams::Ec { x, y, .. } => {
                jsonwebtoken::DecodingKey::from_ec_components(&b64(x), &b64(y)).unwrap_or_else(
                    |_| jsonwebtoken::DecodingKey::from_ec_der(&self.inner.spki_der),
                )
            }
            JwkParams::Ed { x } => jsonwebtoken::DecodingKey::from_ed_der(x),
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("type", &self.key_type())
            .field("kid", &self.kid())
            .finish()
    }
}

fn ec_params(point: &[u8], curve: Curve) -> Result<JwkParams, ConfigError> {
    let coord = point.len().saturating_sub(1) / 2;
    if point.first() != Some(&4) || point.len() != 1 + 2 * coord {
        return Err(key_err("unexpected EC public key encoding"));
    }
    Ok(JwkParams::Ec {
        curve,
        x: point[1..=coord].to_vec(),
        y: point[1 + coord..].to_vec(),
    })
}

/// The DER of an SPKI for an uncompressed point, up to the point: `SEQUENCE { SEQUENCE {
/// id-ecPublicKey, namedCurve }, BIT STRING (0 unused bits) }`.
const SPKI_P256_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const SPKI_P384_PREFIX: &[u8] = &[
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];
/// `SEQUENCE { SEQUENCE { id-Ed25519 }, BIT STRING (0 unused bits) }`, up to the key.
const SPKI_ED25519_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn ec_spki(prefix: &[u8], len: usize, x: Vec<u8>, y: Vec<u8>) -> Result<Vec<u8>, ConfigError> {
    if x.len() != len || y.len() != len {
        return Err(key_err("the JWK's EC coordinates have the wrong length"));
    }
    Ok([prefix, &[4], &x, &y].concat())
}

fn curve_name(curve: Curve) -> &'static str {
    match curve {
        Curve::P256 => "P-256",
        Curve::P384 => "P-384",
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no white space.
fn thumbprint(params: &JwkParams) -> String {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let canonical = match params {
        JwkParams::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n)),
        JwkParams::Ec { curve, x, y } => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            curve_name(*curve),
            b64(x),
            b64(y)
        ),
        JwkParams::Ed { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
    };
    b64(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_round_trips_through_pem() {
        let k = KeyPair::generate_rsa(2048).unwrap();
        let again = KeyPair::from_pem(
            k.private_key_pem().as_bytes(),
            Some(k.public_key_pem().as_bytes()),
        )
        .unwrap();
        assert_eq!(again.kid(), k.kid());
        let public = PublicKey::from_pem(k.public_key_pem().as_bytes()).unwrap();
        assert_eq!(&public, k.public_key());
        assert_eq!(k.default_algorithm(), Algorithm::RS512);
    }

    #[test]
    fn mismatched_public_key_is_refused() {
        let a = KeyPair::generate_ec(Curve::P256).unwrap();
        let b = KeyPair::generate_ec(Curve::P256).unwrap();
        let err = KeyPair::from_pem(
            a.private_key_pem().as_bytes(),
            Some(b.public_key_pem().as_bytes()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not match"));
    }

    #[test]
    fn ec_and_ed_keys_round_trip() {
        for k in [
            KeyPair::generate_ec(Curve::P256).unwrap(),
            KeyPair::generate_ec(Curve::P384).unwrap(),
            KeyPair::generate_ed25519().unwrap(),
        ] {
            let again = KeyPair::from_pem(k.private_key_pem().as_bytes(), None).unwrap();
            assert_eq!(again.kid(), k.kid());
            let public = PublicKey::from_pem(k.public_key_pem().as_bytes()).unwrap();
            assert_eq!(public.kid(), k.kid());
        }
    }

    #[test]
    fn garbage_is_a_config_error() {
        assert!(KeyPair::from_pem(b"not a key", None).is_err());
        assert!(
            PublicKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
        assert!(KeyPair::generate_rsa(1024).is_err());
    }

    #[test]
    fn jwk_round_trips_for_every_key_type() {
        for (k, alg) in [
            (KeyPair::generate_rsa(2048).unwrap(), Algorithm::RS512),
            (KeyPair::generate_ec(Curve::P256).unwrap(), Algorithm::ES256),
            (KeyPair::generate_ec(Curve::P384).unwrap(), Algorithm::ES384),
            (KeyPair::generate_ed25519().unwrap(), Algorithm::EdDSA),
        ] {
            let jwk = k.public_key().to_jwk(alg);
            let back = PublicKey::from_jwk(&jwk).unwrap();
            assert_eq!(&back, k.public_key(), "{alg}");
            assert_eq!(jwk["kid"], k.kid());
        }
        let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
        assert!(PublicKey::from_jwk(&oct).is_err());
        let short = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
        assert!(PublicKey::from_jwk(&short).is_err());
        let bad_point = json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])});
        assert!(PublicKey::from_jwk(&bad_point).is_err());
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let n = URL_SAFE_NO_PAD.decode("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw").unwrap();
        let e = URL_SAFE_NO_PAD.decode("AQAB").unwrap();
        assert_eq!(
            thumbprint(&JwkParams::Rsa { n, e }),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
