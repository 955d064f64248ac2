//! Provider JWTs, verified with this simulator's own code (no JWT library, nothing from
//! the client it checks).
//!
//! Akash's SDK (`@akashnetwork/chain-sdk`, `JwtTokenManager.generateToken`) writes a
//! token as `base64url(header) "." base64url(payload) "." base64url(signature)`, the
//! header and payload stable-stringified (keys sorted, no whitespace). Two algorithms
//! are accepted, both secp256k1 with a 64-byte `r ‖ s` signature:
//!
//! - `ES256KADR36`, what the SDK mints for a wallet key (`createOfflineDataSigner`): the
//!   signature is over the SHA-256 of the ADR-036 amino sign doc
//!   `{"account_number":"0","chain_id":"","fee":{"amount":[],"gas":"0"},"memo":"",
//!   "msgs":[{"type":"sign/MsgSignData","value":{"data":"<base64 of header.payload>",
//!   "signer":"<iss>"}}],"sequence":"0"}` (sorted JSON, `&<>` escaped as cosmjs
//!   serializes sign docs);
//! - `ES256K`, the plain form (a signer that signs the bytes directly): the signature is
//!   over the SHA-256 of `header.payload`.
//!
//! The claims are checked as the SDK's JSON schema states them (`iss` an `akash1…`
//! address, integer `iat`/`nbf`/`exp`, `version` `"v1"`, `leases.access` one of
//! `full`, `scoped`, `granular`) and in time: `exp` after now, `nbf` not after now.

use std::fmt;

use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL};
use base64::Engine as _;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::{Signature, VerifyingKey};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Why a token was refused. Every variant is an HTTP 401 (or 403 for
/// [`JwtError::NotPermitted`]) with [`JwtError`]'s one-line text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON, or claims of the wrong shape.
    Malformed(String),
    /// An `alg` other than `ES256K` and `ES256KADR36`.
    UnsupportedAlgorithm(String),
    /// The signature does not verify against the issuer's key.
    BadSignature,
    /// `exp` is not after now.
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// Now, in Unix seconds.
        now: i64,
    },
    /// `nbf` is after now.
    NotYetValid {
        /// The token's `nbf`.
        nbf: i64,
        /// Now, in Unix seconds.
        now: i64,
    },
    /// The claims do not grant this action on this lease.
    NotPermitted(String),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed(why) => write!(f, "malformed provider JWT: {why}"),
            JwtError::UnsupportedAlgorithm(alg) => write!(
                f,
                "provider JWT alg '{alg}' is not accepted (only ES256KADR36 and ES256K)"
            ),
            JwtError::BadSignature => f.write_str(
                "provider JWT signature does not verify against the issuer's public key on chain",
            ),
            JwtError::Expired { exp, now } => {
                write!(f, "provider JWT expired at {exp} (now {now})")
            }
            JwtError::NotYetValid { nbf, now } => {
                write!(f, "provider JWT is not valid before {nbf} (now {now})")
            }
            JwtError::NotPermitted(why) => write!(f, "provider JWT does not permit this: {why}"),
        }
    }
}

impl std::error::Error for JwtError {}

/// The signing algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// secp256k1 over SHA-256 of the ADR-036 sign doc wrapping `header.payload` (what
    /// the SDK mints for a wallet).
    Es256kAdr36,
    /// secp256k1 over SHA-256 of `header.payload`.
    Es256k,
}

impl Algorithm {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Es256kAdr36 => "ES256KADR36",
            Algorithm::Es256k => "ES256K",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256KADR36" => Some(Algorithm::Es256kAdr36),
            "ES256K" => Some(Algorithm::Es256k),
            _ => None,
        }
    }
}

/// What a provider action needs the token to grant (the SDK schema's scope names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `PUT /deployment/{dseq}/manifest`.
    SendManifest,
    /// `GET /lease/…/status`.
    Status,
    /// `GET /lease/…/logs`.
    Logs,
}

impl Action {
    fn scope(self) -> &'static str {
        match self {
            Action::SendManifest => "send-manifest",
            Action::Status => "status",
            Action::Logs => "logs",
        }
    }
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The issuer: the lease owner's `akash1…` address.
    pub iss: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    pub nbf: i64,
    /// Expires (Unix seconds).
    pub exp: i64,
    /// The algorithm it was signed with.
    pub alg: Algorithm,
    /// `leases` as sent (`{"access": "full"}` and the SDK's finer forms).
    pub leases: Value,
}

impl Claims {
    /// Whether the claims let their bearer do `action` on deployment `dseq` at
    /// `provider`: `full` access; `scoped` with the action in `scope`; `granular` with
    /// this provider's entry granting it (full, scoped, or per deployment).
    pub fn permits(&self, action: Action, provider: &str, dseq: u64) -> Result<(), JwtError> {
        let scope_has = |scope: &Value| {
            scope
                .as_array()
                .is_some_and(|items| items.iter().any(|s| s == action.scope()))
        };
        let denied = || {
            JwtError::NotPermitted(format!(
                "leases grants no '{}' on deployment {dseq} at provider {provider}",
                action.scope()
            ))
        };
        match self.leases["access"].as_str() {
            Some("full") => Ok(()),
            Some("scoped") if scope_has(&self.leases["scope"]) => Ok(()),
            Some("granular") => {
                let entry = self.leases["permissions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|permission| permission["provider"] == provider)
                    .ok_or_else(denied)?;
                let granted =
                    match entry["access"].as_str() {
                        Some("full") => true,
                        Some("scoped") => scope_has(&entry["scope"]),
                        Some("granular") => {
                            entry["deployments"].as_array().into_iter().flatten().any(
                                |deployment| {
                                    deployment["dseq"].as_u64() == Some(dseq)
                                        && scope_has(&deployment["scope"])
                                },
                            )
                        }
                        _ => false,
                    };
                granted.then_some(()).ok_or_else(denied)
            }
            _ => Err(denied()),
        }
    }
}

/// The header and claims of a token, decoded but not verified: the simulator needs
/// `iss` to find the key that verifies it.
#[derive(Debug, Clone)]
pub struct UnverifiedToken {
    alg: Algorithm,
    claims: Claims,
    signing_input: String,
    signature: Vec<u8>,
}

impl UnverifiedToken {
    /// The issuer it claims (whose on-chain key must verify it).
    pub fn issuer(&self) -> &str {
        &self.claims.iss
    }
}

#[derive(Deserialize)]
struct RawClaims {
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    version: String,
    leases: Value,
}

/// Splits and decodes `token` (the text after `Bearer `), checking the header's `alg`
/// and the claims' shape.
pub fn decode(token: &str) -> Result<UnverifiedToken, JwtError> {
    let malformed = |why: &str| JwtError::Malformed(why.to_owned());
    let mut parts = token.trim().split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not three dot-separated parts"));
    };
    let json_part = |part: &str, what: &str| -> Result<Value, JwtError> {
        let bytes = BASE64URL
            .decode(part)
            .map_err(|_| JwtError::Malformed(format!("the {what} is not base64url")))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| JwtError::Malformed(format!("the {what} is not JSON")))
    };
    let header_json = json_part(header, "header")?;
    let alg_name = header_json["alg"]
        .as_str()
        .ok_or_else(|| malformed("the header has no alg"))?;
    let alg = Algorithm::from_name(alg_name)
        .ok_or_else(|| JwtError::UnsupportedAlgorithm(alg_name.to_owned()))?;
    let raw: RawClaims = serde_json::from_value(json_part(payload, "payload")?).map_err(|e| {
        JwtError::Malformed(format!(
            "the claims need iss, integer iat/nbf/exp, version and leases ({e})"
        ))
    })?;
    if !is_akash_address(&raw.iss) {
        return Err(JwtError::Malformed(format!(
            "iss '{}' is not an akash1… account address",
            raw.iss
        )));
    }
    if raw.version != "v1" {
        return Err(JwtError::Malformed(format!(
            "version '{}' is not v1",
            raw.version
        )));
    }
    if !matches!(
        raw.leases["access"].as_str(),
        Some("full" | "scoped" | "granular")
    ) {
        return Err(malformed("leases.access must be full, scoped or granular"));
    }
    let signature = BASE64URL
        .decode(signature)
        .map_err(|_| malformed("the signature is not base64url"))?;
    Ok(UnverifiedToken {
        alg,
        claims: Claims {
            iss: raw.iss,
            iat: raw.iat,
            nbf: raw.nbf,
            exp: raw.exp,
            alg,
            leases: raw.leases,
        },
        signing_input: format!("{header}.{payload}"),
        signature,
    })
}

impl UnverifiedToken {
    /// Verifies the signature with the issuer's compressed (or uncompressed) SEC1
    /// public key and the validity window against `now` (Unix seconds).
    pub fn verify(self, issuer_key: &[u8], now: i64) -> Result<Claims, JwtError> {
        let key = VerifyingKey::from_sec1_bytes(issuer_key).map_err(|_| {
            JwtError::Malformed("the issuer's on-chain public key is not secp256k1".into())
        })?;
        let signature =
            Signature::from_slice(&self.signature).map_err(|_| JwtError::BadSignature)?;
        let digest: [u8; 32] = match self.alg {
            Algorithm::Es256k => Sha256::digest(self.signing_input.as_bytes()).into(),
            Algorithm::Es256kAdr36 => Sha256::digest(adr36_sign_doc(
                &self.claims.iss,
                self.signing_input.as_bytes(),
            ))
            .into(),
        };
        key.verify_prehash(&digest, &signature)
            .map_err(|_| JwtError::BadSignature)?;
        let claims = self.claims;
        if claims.exp <= now {
            return Err(JwtError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if claims.nbf > now {
            return Err(JwtError::NotYetValid {
                nbf: claims.nbf,
                now,
            });
        }
        Ok(claims)
    }
}

/// The bytes an ADR-036 signer signs for `data` on behalf of `signer`: the amino sign
/// doc of one `sign/MsgSignData`, as cosmjs's `serializeSignDoc` writes it (keys
/// sorted, no whitespace, `&`, `<`, `>` as `\u0026`, `\u003c`, `\u003e`).
pub fn adr36_sign_doc(signer: &str, data: &[u8]) -> Vec<u8> {
    let doc = json!({
        "account_number": "0",
        "chain_id": "",
        "fee": {"amount": [], "gas": "0"},
        "memo": "",
        "msgs": [{
            "type": "sign/MsgSignData",
            "value": {"data": BASE64.encode(data), "signer": signer},
        }],
        "sequence": "0",
    });
    super::manifest::sorted_json(&doc).into_bytes()
}

/// `akash1` followed by 38 lower-case letters or digits (the SDK schema's pattern).
fn is_akash_address(text: &str) -> bool {
    text.strip_prefix("akash1").is_some_and(|rest| {
        rest.len() == 38
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::signature::hazmat::PrehashSigner;
    use k256::ecdsa::SigningKey;

    const ISS: &str = "akash19rl4cm2hmr8afy4kldpxz3fka4jguq0a3mq6x0";

    fn mint(key: &SigningKey, alg: &str, claims: Value) -> String {
        let header = BASE64URL.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let payload = BASE64URL.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let digest: [u8; 32] = if alg == "ES256KADR36" {
            Sha256::digest(adr36_sign_doc(ISS, input.as_bytes())).into()
        } else {
            Sha256::digest(input.as_bytes()).into()
        };
        let signature: Signature = key.sign_prehash(&digest).unwrap();
        format!("{input}.{}", BASE64URL.encode(signature.to_bytes()))
    }

    fn claims(leases: Value) -> Value {
        json!({"iss": ISS, "iat": 100, "nbf": 100, "exp": 400, "version": "v1", "leases": leases})
    }

    #[test]
    fn both_algorithms_verify_and_the_window_is_enforced() {
        let key = SigningKey::from_slice(&[7; 32]).unwrap();
        let public = key.verifying_key().to_sec1_bytes();
        for alg in ["ES256KADR36", "ES256K"] {
            let token = mint(&key, alg, claims(json!({"access": "full"})));
            let verified = decode(&token).unwrap().verify(&public, 200).unwrap();
            assert_eq!(verified.alg.name(), alg);
            assert_eq!(
                decode(&token).unwrap().verify(&public, 400),
                Err(JwtError::Expired { exp: 400, now: 400 })
            );
            assert_eq!(
                decode(&token).unwrap().verify(&public, 99),
                Err(JwtError::NotYetValid { nbf: 100, now: 99 })
            );
        }
    }

    #[test]
    fn granular_and_scoped_leases_grant_only_what_they_name() {
        let scoped = Claims {
            iss: ISS.into(),
            iat: 0,
            nbf: 0,
            exp: 1,
            alg: Algorithm::Es256k,
            leases: json!({"access": "scoped", "scope": ["status"]}),
        };
        assert!(scoped.permits(Action::Status, "akash1p", 5).is_ok());
        assert!(scoped.permits(Action::SendManifest, "akash1p", 5).is_err());
        let granular = Claims {
            leases: json!({"access": "granular", "permissions": [
                {"provider": "akash1p", "access": "granular",
                 "deployments": [{"dseq": 5, "scope": ["logs"], "services": ["web"]}]}
            ]}),
            ..scoped
        };
        assert!(granular.permits(Action::Logs, "akash1p", 5).is_ok());
        assert!(granular.permits(Action::Logs, "akash1p", 6).is_err());
        assert!(granular.permits(Action::Logs, "akash1q", 5).is_err());
    }
}
