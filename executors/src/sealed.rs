//! Sealed secrets: a value encrypted to a public key, safe to store in a spec, the
//! database or a log, and opened only where it is used.
//!
//! The text form is `sealed:v1:<standard base64>`. The bytes are ECIES on secp256k1 in
//! the format of the `ecies` crate and of `eciesjs` (both with their default
//! configuration): a 65-byte uncompressed ephemeral public key, then AES-256-GCM's
//! 16-byte nonce, 16-byte tag and the ciphertext, under a key derived with HKDF-SHA256
//! from the ephemeral key and the shared point. So a value sealed by another tool that
//! speaks this format opens here, and the reverse.
//!
//! ```
//! use morpheus_executors::sealed::{self, SecretKey};
//!
//! let key = SecretKey::generate();
//! let text = sealed::seal(&key.public_key(), "hunter2");
//! assert!(sealed::is_sealed(&text));
//! assert_eq!(sealed::open(&key, &text).unwrap().as_str(), "hunter2");
//! ```
//!
//! Errors are one line and never contain any part of a plaintext or a secret key.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::key_source::{read_secret, KeySource};

/// What every sealed value starts with (`sealed:`, then the format version).
pub const PREFIX: &str = "sealed:v1:";

/// The scheme part of [`PREFIX`], shared by every version.
const SCHEME: &str = "sealed:";

/// Uncompressed secp256k1 point: the ephemeral key at the start of the sealed bytes.
const EPHEMERAL_KEY_BYTES: usize = 65;

/// AES-256-GCM nonce (the `ecies` crate's default, and eciesjs's) plus tag.
const NONCE_AND_TAG_BYTES: usize = 16 + 16;

/// The shortest sealed value: an empty plaintext.
pub const MIN_SEALED_BYTES: usize = EPHEMERAL_KEY_BYTES + NONCE_AND_TAG_BYTES;

/// Why a value could not be sealed or opened, or a key not read. One line each; none
/// carries any part of a plaintext or a secret key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealedError {
    /// The text does not start with `sealed:`.
    #[error("not a sealed value: it must start with {PREFIX}")]
    NotSealed,
    /// `sealed:` with a version this build does not know.
    #[error("sealed value of unknown format '{0}': this Morpheus reads {PREFIX}")]
    UnknownVersion(String),
    /// The part after the prefix is not standard base64.
    #[error("sealed value is not valid base64 after its prefix ({0})")]
    BadBase64(String),
    /// Too short to hold an ephemeral key, a nonce and a tag.
    #[error(
        "sealed value is too short: {0} bytes, an ECIES value has at least {MIN_SEALED_BYTES}"
    )]
    TooShort(usize),
    /// The ephemeral key is not a point on secp256k1: the value was damaged.
    #[error("sealed value is damaged: its ephemeral key is not a secp256k1 point")]
    BadEphemeralKey,
    /// Authentication failed. AES-GCM cannot tell a wrong key from altered bytes.
    #[error("sealed value does not open: wrong key, or the value was tampered with")]
    WrongKeyOrTampered,
    /// It opened, but the plaintext is not UTF-8 text.
    #[error("sealed value opened, but its plaintext is not UTF-8 text")]
    NotUtf8,
    /// A secret key that is not 32 bytes of hex, or not a valid secp256k1 scalar.
    #[error("secret key: {0}")]
    BadSecretKey(String),
    /// A public key that is not a compressed or uncompressed secp256k1 point in hex.
    #[error("public key: {0}")]
    BadPublicKey(String),
}

/// A secp256k1 secret key that opens sealed values. Its `Debug` shows nothing of it;
/// equality is constant-time.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(ecies::SecretKey);

impl SecretKey {
    /// A new random key (from the operating system's generator).
    pub fn generate() -> Self {
        Self(ecies::SecretKey::generate())
    }

    /// Parses 64 hex digits (an optional `0x` and surrounding whitespace are ignored).
    pub fn from_hex(text: &str) -> Result<Self, SealedError> {
        let digits = strip_hex_prefix(text.trim());
        let bytes = Zeroizing::new(hex::decode(digits).map_err(|_| {
            SealedError::BadSecretKey("expected 64 hex digits (optional 0x)".into())
        })?);
        if bytes.len() != 32 {
            return Err(SealedError::BadSecretKey(format!(
                "expected 32 bytes (64 hex digits), got {}",
                bytes.len()
            )));
        }
        ecies::SecretKey::parse_slice(&bytes)
            .map(Self)
            .map_err(|_| SealedError::BadSecretKey("not a valid secp256k1 secret key".into()))
    }

    /// Reads a hex key from where `source` points (`hex_key_env` or `hex_key_file`).
    /// Mnemonics are refused: a sealing key is a bare key, not a wallet.
    pub fn from_source(source: &KeySource) -> Result<Self, SealedError> {
        match source {
            KeySource::HexKeyEnv(_) | KeySource::HexKeyFile(_) => {}
            KeySource::MnemonicEnv(_) | KeySource::MnemonicFile(_) => {
                return Err(SealedError::BadSecretKey(format!(
                    "{source}: sealed secrets take a hex key (hex_key_env or hex_key_file), not a mnemonic"
                )))
            }
        }
        let text = read_secret(source).map_err(SealedError::BadSecretKey)?;
        Self::from_hex(&text).map_err(|error| match error {
            SealedError::BadSecretKey(message) => {
                SealedError::BadSecretKey(format!("{source}: {message}"))
            }
            other => other,
        })
    }

    /// The public key values are sealed to.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(ecies::PublicKey::from_secret_key(&self.0))
    }

    /// The key as 64 lowercase hex digits (for writing a new key to its file).
    pub fn to_hex(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.0.serialize());
        Zeroizing::new(hex::encode(*bytes))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public_key())
    }
}

/// A secp256k1 public key that values are sealed to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ecies::PublicKey);

impl PublicKey {
    /// Parses a compressed (66 hex digits) or uncompressed (130) point; an optional
    /// `0x` and surrounding whitespace are ignored.
    pub fn from_hex(text: &str) -> Result<Self, SealedError> {
        let bytes = hex::decode(strip_hex_prefix(text.trim())).map_err(|_| {
            SealedError::BadPublicKey(
                "expected hex (66 digits compressed, 130 uncompressed)".into(),
            )
        })?;
        if bytes.len() != 33 && bytes.len() != 65 {
            return Err(SealedError::BadPublicKey(format!(
                "expected 33 bytes (compressed) or 65 (uncompressed), got {}",
                bytes.len()
            )));
        }
        ecies::PublicKey::parse_slice(&bytes, None)
            .map(Self)
            .map_err(|_| SealedError::BadPublicKey("not a point on secp256k1".into()))
    }
}

impl fmt::Display for PublicKey {
    /// Compressed, 66 lowercase hex digits (as eciesjs's `PublicKey.toHex()`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.serialize_compressed()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Whether `text` claims to be a sealed value (any version). Such a value is never
/// used as it is: it opens, or the use fails.
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(SCHEME)
}

/// Seals `plaintext` to `public_key`: `sealed:v1:<base64>`. Every call gives a
/// different text (a fresh ephemeral key and nonce).
pub fn seal(public_key: &PublicKey, plaintext: &str) -> String {
    // Encryption to a parsed key fails only on a key that does not parse, which a
    // `PublicKey` cannot be.
    let sealed = ecies::encrypt(&public_key.0.serialize(), plaintext.as_bytes())
        .expect("ECIES encryption to a valid secp256k1 public key");
    format!("{PREFIX}{}", BASE64.encode(sealed))
}

/// Checks everything about a sealed value that can be checked without its key: the
/// prefix, the base64, the length and the ephemeral key. Returns the sealed bytes.
pub fn check(text: &str) -> Result<Vec<u8>, SealedError> {
    let text = text.trim();
    let Some(rest) = text.strip_prefix(SCHEME) else {
        return Err(SealedError::NotSealed);
    };
    let Some(encoded) = text.strip_prefix(PREFIX) else {
        let version = rest.split(':').next().unwrap_or_default();
        let version: String = version.chars().take(16).collect();
        return Err(SealedError::UnknownVersion(format!("sealed:{version}")));
    };
    let bytes = BASE64
        .decode(encoded)
        .map_err(|error| SealedError::BadBase64(error.to_string()))?;
    if bytes.len() < MIN_SEALED_BYTES {
        return Err(SealedError::TooShort(bytes.len()));
    }
    ecies::PublicKey::parse_slice(&bytes[..EPHEMERAL_KEY_BYTES], None)
        .map_err(|_| SealedError::BadEphemeralKey)?;
    Ok(bytes)
}

/// Opens a sealed value with `secret_key`. The plaintext is wiped from memory when
/// the returned string is dropped.
pub fn open(secret_key: &SecretKey, text: &str) -> Result<Zeroizing<String>, SealedError> {
    let bytes = check(text)?;
    let plaintext = Zeroizing::new(
        ecies::decrypt(&secret_key.0.serialize(), &bytes)
            .map_err(|_| SealedError::WrongKeyOrTampered)?,
    );
    match std::str::from_utf8(&plaintext) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(_) => Err(SealedError::NotUtf8),
    }
}

fn strip_hex_prefix(text: &str) -> &str {
    text.strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAINTEXT: &str = "postgres://app:correct horse battery staple@db/app";

    #[test]
    fn a_sealed_value_opens_with_its_key_to_the_same_text() {
        let key = SecretKey::generate();
        let sealed = seal(&key.public_key(), PLAINTEXT);
        assert!(sealed.starts_with(PREFIX));
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains(PLAINTEXT));
        assert_eq!(open(&key, &sealed).unwrap().as_str(), PLAINTEXT);
        // A fresh ephemeral key each time: equal plaintexts do not look equal.
        assert_ne!(seal(&key.public_key(), PLAINTEXT), sealed);
        // The empty string and surrounding whitespace of the sealed text.
        let empty = seal(&key.public_key(), "");
        assert_eq!(open(&key, &format!(" {empty}\n")).unwrap().as_str(), "");
    }

    #[test]
    fn the_bytes_are_an_uncompressed_ephemeral_key_then_nonce_tag_and_ciphertext() {
        let key = SecretKey::generate();
        let bytes = check(&seal(&key.public_key(), "abc")).unwrap();
        assert_eq!(bytes[0], 0x04, "uncompressed SEC1 point");
        assert_eq!(bytes.len(), 65 + 16 + 16 + 3);
    }

    #[test]
    fn a_tampered_value_does_not_open() {
        let key = SecretKey::generate();
        let sealed = seal(&key.public_key(), PLAINTEXT);
        let mut bytes = check(&sealed).unwrap();
        // Every region: nonce, tag, ciphertext.
        for index in [
            EPHEMERAL_KEY_BYTES,
            EPHEMERAL_KEY_BYTES + 20,
            bytes.len() - 1,
        ] {
            bytes[index] ^= 0x01;
            let tampered = format!("{PREFIX}{}", BASE64.encode(&bytes));
            assert_eq!(
                open(&key, &tampered).unwrap_err(),
                SealedError::WrongKeyOrTampered,
                "byte {index}"
            );
            bytes[index] ^= 0x01;
        }
        // The ephemeral key: no longer on the curve, or another point.
        bytes[10] ^= 0x01;
        let tampered = format!("{PREFIX}{}", BASE64.encode(&bytes));
        assert!(matches!(
            open(&key, &tampered).unwrap_err(),
            SealedError::BadEphemeralKey | SealedError::WrongKeyOrTampered
        ));
        // Cut short.
        let cut = format!("{PREFIX}{}", BASE64.encode(&bytes[..MIN_SEALED_BYTES - 1]));
        assert_eq!(
            open(&key, &cut).unwrap_err(),
            SealedError::TooShort(MIN_SEALED_BYTES - 1)
        );
    }

    #[test]
    fn another_key_does_not_open_it_and_says_so_without_the_plaintext() {
        let key = SecretKey::generate();
        let other = SecretKey::generate();
        let sealed = seal(&key.public_key(), PLAINTEXT);
        let error = open(&other, &sealed).unwrap_err();
        assert_eq!(error, SealedError::WrongKeyOrTampered);
        let message = error.to_string();
        assert!(!message.contains(PLAINTEXT) && !message.contains('\n'));
        assert!(message.contains("wrong key"), "{message}");
    }

    #[test]
    fn malformed_values_are_named_in_one_line() {
        let key = SecretKey::generate();
        let cases = [
            ("plain text", SealedError::NotSealed),
            (
                "sealed:v9:AAAA",
                SealedError::UnknownVersion("sealed:v9".into()),
            ),
            ("sealed:v1:TooShort", SealedError::TooShort(6)),
        ];
        for (text, expected) in cases {
            assert_eq!(open(&key, text).unwrap_err(), expected, "{text}");
        }
        let bad_base64 = open(&key, "sealed:v1:not base64!").unwrap_err();
        assert!(matches!(bad_base64, SealedError::BadBase64(_)));
        for error in [bad_base64, SealedError::TooShort(1), SealedError::NotSealed] {
            let message = error.to_string();
            assert!(!message.contains('\n'), "{message}");
        }
        // A 0x04 key prefix with coordinates off the curve.
        let mut off_curve = vec![0x04];
        off_curve.extend([0xff; MIN_SEALED_BYTES]);
        let text = format!("{PREFIX}{}", BASE64.encode(&off_curve));
        assert_eq!(open(&key, &text).unwrap_err(), SealedError::BadEphemeralKey);
        assert!(!is_sealed("SECRET=value") && is_sealed("sealed:v2:x"));
    }

    #[test]
    fn a_plaintext_that_is_not_utf8_is_refused_without_being_shown() {
        let key = SecretKey::generate();
        let bytes = ecies::encrypt(&key.public_key().0.serialize(), &[0xff, 0xfe]).unwrap();
        let text = format!("{PREFIX}{}", BASE64.encode(bytes));
        assert_eq!(open(&key, &text).unwrap_err(), SealedError::NotUtf8);
    }

    #[test]
    fn keys_round_trip_through_hex_and_bad_keys_are_named() {
        let key = SecretKey::generate();
        let again = SecretKey::from_hex(&format!("0x{}\n", key.to_hex().as_str())).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let public = key.public_key().to_string();
        assert_eq!(public.len(), 66);
        assert_eq!(PublicKey::from_hex(&public).unwrap(), key.public_key());
        let uncompressed = hex::encode(key.public_key().0.serialize());
        assert_eq!(
            PublicKey::from_hex(&uncompressed).unwrap(),
            key.public_key()
        );
        assert!(!format!("{key:?}").contains(key.to_hex().as_str()));

        assert!(matches!(
            SecretKey::from_hex("zz"),
            Err(SealedError::BadSecretKey(_))
        ));
        assert!(matches!(
            SecretKey::from_hex(&"00".repeat(32)),
            Err(SealedError::BadSecretKey(_))
        ));
        assert!(matches!(
            // x above the field's prime: no point.
            PublicKey::from_hex(&format!("02{}", "ff".repeat(32))),
            Err(SealedError::BadPublicKey(_))
        ));
        assert!(matches!(
            PublicKey::from_hex("abcd"),
            Err(SealedError::BadPublicKey(_))
        ));
    }

    #[test]
    fn keys_are_read_from_their_source_and_mnemonics_refused() {
        let key = SecretKey::generate();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealing.key");
        std::fs::write(&path, format!("{}\n", key.to_hex().as_str())).unwrap();
        let read = SecretKey::from_source(&KeySource::HexKeyFile(path.clone())).unwrap();
        assert_eq!(read.public_key(), key.public_key());

        let missing = SecretKey::from_source(&KeySource::HexKeyEnv(
            "MORPHEUS_SEALED_TEST_UNSET_VARIABLE".into(),
        ))
        .unwrap_err();
        assert!(missing.to_string().contains("is not set"), "{missing}");
        let mnemonic = SecretKey::from_source(&KeySource::MnemonicFile(path)).unwrap_err();
        assert!(
            mnemonic.to_string().contains("not a mnemonic"),
            "{mnemonic}"
        );
    }
}
