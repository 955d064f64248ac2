//! [`KeySource`]: where a signing key is (an environment variable or a file), shared
//! by the executors that sign (`cosmos`, `evm`). Only the *name* of a variable or the
//! *path* of a file is configured, so a configuration can live in `morpheus.toml`, in
//! the database or in logs without leaking anything.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Where the signing key comes from. Only the *name* of a variable or the *path* of a
/// file is configured; the secret itself is read when the executor starts.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySource {
    /// A BIP-39 mnemonic in this environment variable.
    MnemonicEnv(String),
    /// A BIP-39 mnemonic in this file.
    MnemonicFile(PathBuf),
    /// A hex secp256k1 private key (64 hex digits, optional `0x`) in this variable.
    HexKeyEnv(String),
    /// A hex secp256k1 private key in this file.
    HexKeyFile(PathBuf),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for KeySource {
    /// Where the key is, for error messages: `mnemonic in $AKASH_MNEMONIC`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MnemonicEnv(name) => write!(f, "mnemonic in ${name}"),
            Self::MnemonicFile(path) => write!(f, "mnemonic in {}", path.display()),
            Self::HexKeyEnv(name) => write!(f, "hex key in ${name}"),
            Self::HexKeyFile(path) => write!(f, "hex key in {}", path.display()),
        }
    }
}

/// Reads the secret `source` points to. Errors say where it was looked for and never
/// contain any part of it.
pub(crate) fn read_secret(source: &KeySource) -> Result<Zeroizing<String>, String> {
    let text = match source {
        KeySource::MnemonicEnv(name) | KeySource::HexKeyEnv(name) => {
            std::env::var(name).map_err(|error| match error {
                std::env::VarError::NotPresent => {
                    format!("environment variable {name} is not set")
                }
                std::env::VarError::NotUnicode(_) => {
                    format!("environment variable {name} is not UTF-8")
                }
            })?
        }
        KeySource::MnemonicFile(path) | KeySource::HexKeyFile(path) => {
            std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {}", path.display(), error.kind()))?
        }
    };
    let text = Zeroizing::new(text);
    if text.trim().is_empty() {
        return Err(format!("{source} is empty"));
    }
    Ok(text)
}
