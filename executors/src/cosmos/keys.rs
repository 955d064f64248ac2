//! Signing keys. Secrets are read from where [`KeySource`] points, turned into a key and
//! dropped (zeroized); no error message, `Debug` output or log line contains them.

use std::fmt;

use cosmrs::crypto::secp256k1::SigningKey;
use cosmrs::crypto::PublicKey;
use zeroize::Zeroizing;

use super::config::KeySource;

/// A secp256k1 key that signs transactions, with its public key and address.
pub struct Signer {
    key: SigningKey,
    public_key: PublicKey,
    address: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be loaded. Messages say where the key was looked for and
/// never contain any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cosmos key: {0}")]
pub struct KeyError(String);

impl Signer {
    /// Loads the key `source` points to.
    pub fn load(source: &KeySource, hd_path: &str, prefix: &str) -> Result<Self, KeyError> {
        let secret = read_secret(source)?;
        match source {
            KeySource::MnemonicEnv(_) | KeySource::MnemonicFile(_) => {
                Self::from_mnemonic(&secret, hd_path, prefix)
                    .map_err(|KeyError(why)| KeyError(format!("{source}: {why}")))
            }
            KeySource::HexKeyEnv(_) | KeySource::HexKeyFile(_) => Self::from_hex(&secret, prefix)
                .map_err(|KeyError(why)| KeyError(format!("{source}: {why}"))),
        }
    }

    /// Derives the key of a BIP-39 English mnemonic (no passphrase) at `hd_path`
    /// (Cosmos: `m/44'/118'/0'/0/0`).
    pub fn from_mnemonic(phrase: &str, hd_path: &str, prefix: &str) -> Result<Self, KeyError> {
        // Normalise whitespace so a phrase pasted with line breaks still works.
        let phrase = Zeroizing::new(
            phrase
                .split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(" "),
        );
        let mnemonic = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &phrase)
            .map_err(|_| KeyError("not a valid BIP-39 English mnemonic".into()))?;
        let path: cosmrs::bip32::DerivationPath = hd_path
            .parse()
            .map_err(|_| KeyError(format!("hd path '{hd_path}' is not a BIP-32 path")))?;
        let seed = Zeroizing::new(mnemonic.to_seed_normalized(""));
        let key = SigningKey::derive_from_path(*seed, &path)
            .map_err(|_| KeyError(format!("cannot derive a key at {hd_path}")))?;
        Self::from_key(key, prefix)
    }

    /// A key from 32 bytes written as 64 hex digits (an optional `0x` is ignored).
    pub fn from_hex(hex_key: &str, prefix: &str) -> Result<Self, KeyError> {
        let text = hex_key.trim();
        let text = text.strip_prefix("0x").unwrap_or(text);
        let bytes = Zeroizing::new(
            hex::decode(text).map_err(|_| KeyError("not a hex private key".into()))?,
        );
        if bytes.len() != 32 {
            return Err(KeyError(format!(
                "a private key is 32 bytes (64 hex digits), this one has {}",
                bytes.len()
            )));
        }
        let key = SigningKey::from_slice(&bytes)
            .map_err(|_| KeyError("not a valid secp256k1 private key".into()))?;
        Self::from_key(key, prefix)
    }

    fn from_key(key: SigningKey, prefix: &str) -> Result<Self, KeyError> {
        let public_key = key.public_key();
        let address = public_key
            .account_id(prefix)
            .map_err(|error| KeyError(format!("cannot derive an address: {error}")))?
            .to_string();
        Ok(Self {
            key,
            public_key,
            address,
        })
    }

    /// The bech32 account address (`akash1…`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The underlying key, for signing.
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

fn read_secret(source: &KeySource) -> Result<Zeroizing<String>, KeyError> {
    crate::key_source::read_secret(source).map_err(KeyError)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The BIP-39 test vector: public, never holds funds worth protecting.
    const MNEMONIC: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
    const PATH: &str = "m/44'/118'/0'/0/0";

    #[test]
    fn mnemonic_derives_the_well_known_cosmos_address() {
        let signer = Signer::from_mnemonic(MNEMONIC, PATH, "cosmos").unwrap();
        assert_eq!(
            signer.address(),
            "cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4"
        );
        let akash = Signer::from_mnemonic(MNEMONIC, PATH, "akash").unwrap();
        assert!(akash.address().starts_with("akash1"));
        assert_eq!(akash.public_key(), signer.public_key());
    }

    #[test]
    fn hex_key_of_the_derived_scalar_gives_the_same_account() {
        let seed = bip39::Mnemonic::parse(MNEMONIC).unwrap().to_seed("");
        let xprv = cosmrs::bip32::XPrv::derive_from_path(seed, &PATH.parse().unwrap()).unwrap();
        let hex_key = hex::encode(xprv.private_key().to_bytes());
        let from_hex = Signer::from_hex(&format!("0x{hex_key}\n"), "akash").unwrap();
        let from_mnemonic = Signer::from_mnemonic(MNEMONIC, PATH, "akash").unwrap();
        assert_eq!(from_hex.address(), from_mnemonic.address());
    }

    #[test]
    fn loads_from_env_and_files_with_errors_that_never_echo_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mnemonic");
        std::fs::File::create(&file)
            .unwrap()
            .write_all(format!("  {MNEMONIC}\n").as_bytes())
            .unwrap();
        let from_file = Signer::load(&KeySource::MnemonicFile(file), PATH, "akash").unwrap();

        std::env::set_var("MORPHEUS_TEST_KEYS_MNEMONIC", MNEMONIC);
        let from_env = Signer::load(
            &KeySource::MnemonicEnv("MORPHEUS_TEST_KEYS_MNEMONIC".into()),
            PATH,
            "akash",
        )
        .unwrap();
        assert_eq!(from_file.address(), from_env.address());
        assert!(!format!("{from_env:?}").contains("abandon"));

        let missing = Signer::load(
            &KeySource::HexKeyEnv("MORPHEUS_TEST_KEYS_UNSET".into()),
            PATH,
            "akash",
        )
        .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "cosmos key: environment variable MORPHEUS_TEST_KEYS_UNSET is not set"
        );

        let bad_words = "abandon abandon abandon zebra-secret-word";
        std::env::set_var("MORPHEUS_TEST_KEYS_BAD", bad_words);
        let error = Signer::load(
            &KeySource::MnemonicEnv("MORPHEUS_TEST_KEYS_BAD".into()),
            PATH,
            "akash",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("not a valid BIP-39"), "{error}");
        assert!(!error.contains("zebra"), "{error}");

        let hex_file = dir.path().join("hex");
        std::fs::write(&hex_file, "deadbeef-secret").unwrap();
        let error = Signer::load(&KeySource::HexKeyFile(hex_file), PATH, "akash")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a hex private key"), "{error}");
        assert!(!error.contains("deadbeef"), "{error}");

        let absent = dir.path().join("absent");
        let error = Signer::load(&KeySource::MnemonicFile(absent), PATH, "akash")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cannot read") && error.contains("not found"),
            "{error}"
        );
    }

    #[test]
    fn short_hex_keys_are_rejected() {
        let error = Signer::from_hex("abcd", "akash").unwrap_err().to_string();
        assert!(error.contains("32 bytes"), "{error}");
    }
}
