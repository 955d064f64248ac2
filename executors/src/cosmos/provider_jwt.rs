//! The JWT an Akash provider accepts from a deployment's owner, made as Akash's SDK
//! makes it (`JwtTokenManager.generateToken` in `@akashnetwork/chain-sdk`, with a wallet
//! holding the key, e.g. `Secp256k1HdWallet.fromMnemonic`):
//!
//! - header `{"alg":"ES256KADR36","typ":"JWT"}`: the SDK wraps such a wallet with
//!   `createOfflineDataSigner`, whose algorithm is `ES256KADR36` (`ES256K`, a plain
//!   signature over the signing input, is only used by custom signers that declare it);
//! - payload `{"exp","iat","iss","leases":{"access":"full"},"nbf","version":"v1"}`; both
//!   JSON texts with sorted keys (`json-stable-stringify`) and base64url without padding;
//! - signature: ADR-36 `signArbitrary` of the signing input `"<header>.<payload>"`: the
//!   amino sign doc of one `sign/MsgSignData {signer: iss, data: base64(input)}` with
//!   empty chain id, account number and sequence 0, zero fee and empty memo, serialized
//!   as sorted JSON (cosmjs `serializeSignDoc`), SHA-256, secp256k1 (RFC 6979, low s),
//!   `r ‖ s` in base64url.
//!
//! Signing is deterministic, so the same key and times give the SDK's very string
//! (`executors/tests/akash_messages.rs` checks this). The token is a bearer credential
//! for the owner's leases: callers send it in a header and never journal or log it.
//! Nothing here verifies tokens: the provider simulator checks them with its own code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64_URL};
use base64::Engine as _;
use serde::Serialize;

use super::keys::Signer;

/// How long a token is valid by default (the deploy workflow mints one per call).
pub const DEFAULT_PROVIDER_JWT_TTL: Duration = Duration::from_secs(5 * 60);

/// The JOSE algorithm of the SDK's tokens from a wallet key.
const ALGORITHM: &str = "ES256KADR36";

// Fields in alphabetical order: serialized in declaration order, these are the sorted
// JSON texts `json-stable-stringify` writes (no map, so no dependence on serde_json's
// map ordering feature).

#[derive(Serialize)]
struct Header {
    alg: &'static str,
    typ: &'static str,
}

#[derive(Serialize)]
struct Leases {
    access: &'static str,
}

#[derive(Serialize)]
struct Claims<'a> {
    exp: u64,
    iat: u64,
    iss: &'a str,
    leases: Leases,
    nbf: u64,
    version: &'static str,
}

#[derive(Serialize)]
struct Adr36SignDoc<'a> {
    account_number: &'static str,
    chain_id: &'static str,
    fee: Adr36Fee,
    memo: &'static str,
    msgs: [Adr36Msg<'a>; 1],
    sequence: &'static str,
}

#[derive(Serialize)]
struct Adr36Fee {
    amount: [(); 0],
    gas: &'static str,
}

#[derive(Serialize)]
struct Adr36Msg<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    value: Adr36Data<'a>,
}

#[derive(Serialize)]
struct Adr36Data<'a> {
    data: String,
    signer: &'a str,
}

/// A provider JWT for `signer`'s leases (full access), issued at `now` and valid for
/// `ttl` (`iat` = `nbf` = `now` in whole seconds, `exp` = `iat` + `ttl` rounded down to
/// seconds). The result is a credential: send it as `Authorization: Bearer …`, never
/// journal or log it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use morpheus_executors::cosmos::{mint_provider_jwt, Signer};
/// let signer = Signer::from_mnemonic(
///     "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
///     "m/44'/118'/0'/0/0", "akash").unwrap();
/// let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// let token = mint_provider_jwt(&signer, now, Duration::from_secs(300));
/// assert_eq!(token.split('.').count(), 3);
/// assert!(token.starts_with("eyJhbGciOiJFUzI1NktBRFIzNiIsInR5cCI6IkpXVCJ9."));
/// ```
pub fn mint_provider_jwt(signer: &Signer, now: SystemTime, ttl: Duration) -> String {
    let iat = now
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        exp: iat.saturating_add(ttl.as_secs()),
        iat,
        iss: signer.address(),
        leases: Leases { access: "full" },
        nbf: iat,
        version: "v1",
    };
    let header = Header {
        alg: ALGORITHM,
        typ: "JWT",
    };
    let signing_input = format!(
        "{}.{}",
        BASE64_URL.encode(to_json(&header)),
        BASE64_URL.encode(to_json(&claims))
    );
    let signature = signer
        .signing_key()
        .sign(&adr36_sign_bytes(signer.address(), &signing_input))
        // k256 signs a SHA-256 digest with an RFC 6979 nonce; it has no failure mode
        // for a valid key, which `Signer` guarantees.
        .expect("secp256k1 signing with a valid key does not fail");
    format!(
        "{signing_input}.{}",
        BASE64_URL.encode(signature.to_bytes())
    )
}

/// The bytes ADR-36 `signArbitrary` signs for `data` (cosmjs `serializeSignDoc` of
/// `makeADR36AminoSignDoc`): sorted JSON with `&`, `<`, `>` escaped as cosmjs does
/// (base64 and bech32 never contain them; escaped anyway so the function is exact).
fn adr36_sign_bytes(signer: &str, data: &str) -> Vec<u8> {
    let doc = Adr36SignDoc {
        account_number: "0",
        chain_id: "",
        fee: Adr36Fee {
            amount: [],
            gas: "0",
        },
        memo: "",
        msgs: [Adr36Msg {
            kind: "sign/MsgSignData",
            value: Adr36Data {
                data: BASE64.encode(data),
                signer,
            },
        }],
        sequence: "0",
    };
    to_json(&doc)
        .replace('&', "\\u0026")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .into_bytes()
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("plain structs of strings and integers serialize")
}

#[cfg(test)]
mod tests {
    use k256::ecdsa::signature::Verifier;
    use serde_json::{json, Value};

    use super::*;

    const MNEMONIC: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    fn signer() -> Signer {
        Signer::from_mnemonic(MNEMONIC, "m/44'/118'/0'/0/0", "akash").unwrap()
    }

    fn part(token: &str, index: usize) -> Vec<u8> {
        BASE64_URL
            .decode(token.split('.').nth(index).unwrap())
            .unwrap()
    }

    #[test]
    fn header_and_claims_are_the_sdks_sorted_json() {
        let signer = signer();
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_900);
        let token = mint_provider_jwt(&signer, now, DEFAULT_PROVIDER_JWT_TTL);
        assert_eq!(
            String::from_utf8(part(&token, 0)).unwrap(),
            r#"{"alg":"ES256KADR36","typ":"JWT"}"#
        );
        assert_eq!(
            String::from_utf8(part(&token, 1)).unwrap(),
            format!(
                r#"{{"exp":1800000300,"iat":1800000000,"iss":"{}","leases":{{"access":"full"}},"nbf":1800000000,"version":"v1"}}"#,
                signer.address()
            )
        );
        assert!(!token.contains('='), "base64url without padding: {token}");
    }

    #[test]
    fn signature_is_adr36_over_the_signing_input() {
        let signer = signer();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let token = mint_provider_jwt(&signer, now, Duration::from_secs(60));
        let (signing_input, _) = token.rsplit_once('.').unwrap();
        let doc: Value =
            serde_json::from_slice(&adr36_sign_bytes(signer.address(), signing_input)).unwrap();
        assert_eq!(
            doc,
            json!({
                "account_number": "0", "chain_id": "", "fee": {"amount": [], "gas": "0"}, "memo": "",
                "msgs": [{"type": "sign/MsgSignData",
                          "value": {"data": BASE64.encode(signing_input), "signer": signer.address()}}],
                "sequence": "0"
            })
        );
        let key =
            k256::ecdsa::VerifyingKey::from_sec1_bytes(&signer.public_key().to_bytes()).unwrap();
        let signature = k256::ecdsa::Signature::from_slice(&part(&token, 2)).unwrap();
        assert!(signature.normalize_s().is_none(), "low s, as cosmjs signs");
        key.verify(
            &adr36_sign_bytes(signer.address(), signing_input),
            &signature,
        )
        .unwrap();
        // Not a plain ES256K signature of the input: a verifier must use ADR-36.
        assert!(key.verify(signing_input.as_bytes(), &signature).is_err());
        // Deterministic: the same key and time give the same token.
        assert_eq!(
            mint_provider_jwt(&signer, now, Duration::from_secs(60)),
            token
        );
    }

    #[test]
    fn cosmjs_escapes_are_applied() {
        let bytes = String::from_utf8(adr36_sign_bytes("a&b<c>", "x")).unwrap();
        assert!(
            bytes.contains(r#""signer":"a\u0026b\u003cc\u003e""#),
            "{bytes}"
        );
    }
}
