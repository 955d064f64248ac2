//! Ephemeral keys: a fresh secp256k1 key that signs the flows' deployment messages
//! through AuthZ grants from the owner, so the owner's own key stays out of automation.
//!
//! - [`EphemeralKey`] generates a key and seals it at rest with [age](https://age-encryption.org)
//!   under a passphrase (scrypt, then ChaCha20-Poly1305): the passphrase is read by
//!   reference and never stored; the sealed text is all that is kept.
//! - [`grant_messages`] is what the owner signs, in one transaction: a
//!   `GenericAuthorization` for creating, updating and closing deployments, a
//!   `DepositAuthorization` (Akash escrow, deployment scope) capped by a spend limit, and
//!   a `BasicAllowance` fee grant (so the ephemeral key never needs funds of its own),
//!   all expiring with the key. Nothing lets the key transfer funds, change the wallet or
//!   grant anything.
//! - [`revoke_messages`] takes every one of them back.

use age::secrecy::SecretString;
use chrono::{DateTime, Utc};
use cosmrs::crypto::secp256k1::SigningKey;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cosmrs::proto::cosmos::authz::v1beta1::{
    GenericAuthorization, Grant, MsgExec, MsgGrant, MsgRevoke,
};
use cosmrs::proto::cosmos::base::v1beta1::Coin as ProtoCoin;
use cosmrs::proto::cosmos::feegrant::v1beta1::{
    BasicAllowance, MsgGrantAllowance, MsgRevokeAllowance,
};
use cosmrs::Any;
use morpheus_engine::{DocumentQuery, Documents, StepError};
use prost::Message;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::amount::Coin;
use super::keys::{KeyError, Signer};
use super::market::{MSG_CLOSE_DEPLOYMENT_TYPE_URL, MSG_CREATE_DEPLOYMENT_TYPE_URL};

/// `MsgUpdateDeployment` of the deployment module version the executor signs.
pub const MSG_UPDATE_DEPLOYMENT_TYPE_URL: &str = "/akash.deployment.v1beta4.MsgUpdateDeployment";
/// The deposit message a `DepositAuthorization` covers.
pub const MSG_ACCOUNT_DEPOSIT_TYPE_URL: &str = "/akash.escrow.v1.MsgAccountDeposit";
/// The message types an ephemeral key gets a `GenericAuthorization` for.
pub const GENERIC_GRANTS: [&str; 3] = [
    MSG_CREATE_DEPLOYMENT_TYPE_URL,
    MSG_UPDATE_DEPLOYMENT_TYPE_URL,
    MSG_CLOSE_DEPLOYMENT_TYPE_URL,
];

const MSG_GRANT: &str = "/cosmos.authz.v1beta1.MsgGrant";
const MSG_REVOKE: &str = "/cosmos.authz.v1beta1.MsgRevoke";
const MSG_EXEC: &str = "/cosmos.authz.v1beta1.MsgExec";
const GENERIC_AUTHORIZATION: &str = "/cosmos.authz.v1beta1.GenericAuthorization";
const DEPOSIT_AUTHORIZATION: &str = "/akash.escrow.v1.DepositAuthorization";
const MSG_GRANT_ALLOWANCE: &str = "/cosmos.feegrant.v1beta1.MsgGrantAllowance";
const MSG_REVOKE_ALLOWANCE: &str = "/cosmos.feegrant.v1beta1.MsgRevokeAllowance";
const BASIC_ALLOWANCE: &str = "/cosmos.feegrant.v1beta1.BasicAllowance";

/// `akash.escrow.v1.DepositAuthorization` (`escrow/v1/authz.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct DepositAuthorization {
    #[prost(message, optional, tag = "1")]
    spend_limit: Option<ProtoCoin>,
    /// `Scope`: `deployment = 1`, `bid = 2`.
    #[prost(int32, repeated, tag = "2")]
    scopes: Vec<i32>,
}

const SCOPE_DEPLOYMENT: i32 = 1;

/// scrypt work factor (log₂ N) of sealed keys: about 0.1 s to open here, so signing is
/// not slowed much while a stolen database still costs an attacker 2¹⁵ rounds per guess.
pub const SCRYPT_LOG_N: u8 = 15;

/// A freshly generated key, or one opened from its sealed form.
pub struct EphemeralKey {
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EphemeralKey(…)")
    }
}

impl EphemeralKey {
    /// A new random key.
    pub fn generate() -> Self {
        // A random 32-byte scalar is a valid key but for a negligible few; retry those.
        loop {
            let secret = Zeroizing::new(rand_bytes());
            if SigningKey::from_slice(secret.as_slice()).is_ok() {
                return Self { secret };
            }
        }
    }

    /// The raw 32-byte secret, to build a signer of another chain from (never log it).
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Its signer, with addresses under `prefix` (`akash`).
    pub fn signer(&self, prefix: &str) -> Result<Signer, KeyError> {
        Signer::from_hex(&Zeroizing::new(hex::encode(self.secret.as_slice())), prefix)
    }

    /// The key sealed under `passphrase`: age's binary format, base64.
    pub fn seal(&self, passphrase: &str) -> Result<String, String> {
        let mut recipient = age::scrypt::Recipient::new(SecretString::from(passphrase.to_owned()));
        recipient.set_work_factor(SCRYPT_LOG_N);
        let sealed = age::encrypt(&recipient, self.secret.as_slice())
            .map_err(|error| format!("cannot seal the key: {error}"))?;
        use base64::Engine as _;
        Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    /// Opens what [`EphemeralKey::seal`] made. A wrong passphrase or damaged text is an
    /// error that says so, without any part of either.
    pub fn open(sealed: &str, passphrase: &str) -> Result<Self, String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed.trim())
            .map_err(|_| "the sealed key is not base64".to_owned())?;
        let identity = age::scrypt::Identity::new(SecretString::from(passphrase.to_owned()));
        let opened = Zeroizing::new(age::decrypt(&identity, &bytes).map_err(|error| {
            match error {
                age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                    "the sealed key does not open: wrong passphrase, or the key was tampered with"
                        .to_owned()
                }
                other => format!("the sealed key does not open: {other}"),
            }
        })?);
        let secret: [u8; 32] = opened
            .as_slice()
            .try_into()
            .map_err(|_| "the sealed key does not hold a 32-byte key".to_owned())?;
        Ok(Self {
            secret: Zeroizing::new(secret),
        })
    }
}

fn rand_bytes() -> [u8; 32] {
    use k256::elliptic_curve::rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

fn timestamp(at: DateTime<Utc>) -> cosmrs::proto::Timestamp {
    cosmrs::proto::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

fn proto_coin(coin: &Coin) -> ProtoCoin {
    ProtoCoin {
        denom: coin.denom.clone(),
        amount: coin.amount.to_string(),
    }
}

fn any(type_url: &str, message: &impl Message) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: message.encode_to_vec(),
    }
}

/// The owner's grants to `grantee`, all expiring at `expires_at` (whole seconds): the
/// deployment messages, escrow deposits up to `spend_limit`, and fees up to `fee_limit`.
pub fn grant_messages(
    granter: &str,
    grantee: &str,
    expires_at: DateTime<Utc>,
    spend_limit: &Coin,
    fee_limit: &Coin,
) -> Vec<Any> {
    let grant = |authorization: Any| {
        any(
            MSG_GRANT,
            &MsgGrant {
                granter: granter.to_owned(),
                grantee: grantee.to_owned(),
                grant: Some(Grant {
                    authorization: Some(authorization),
                    expiration: Some(timestamp(expires_at)),
                }),
            },
        )
    };
    let mut messages: Vec<Any> = GENERIC_GRANTS
        .iter()
        .map(|msg| {
            grant(any(
                GENERIC_AUTHORIZATION,
                &GenericAuthorization {
                    msg: (*msg).to_owned(),
                },
            ))
        })
        .collect();
    messages.push(grant(any(
        DEPOSIT_AUTHORIZATION,
        &DepositAuthorization {
            spend_limit: Some(proto_coin(spend_limit)),
            scopes: vec![SCOPE_DEPLOYMENT],
        },
    )));
    messages.push(any(
        MSG_GRANT_ALLOWANCE,
        &MsgGrantAllowance {
            granter: granter.to_owned(),
            grantee: grantee.to_owned(),
            allowance: Some(any(
                BASIC_ALLOWANCE,
                &BasicAllowance {
                    spend_limit: vec![proto_coin(fee_limit)],
                    expiration: Some(timestamp(expires_at)),
                },
            )),
        },
    ));
    messages
}

/// Every grant of [`grant_messages`] taken back.
pub fn revoke_messages(granter: &str, grantee: &str) -> Vec<Any> {
    let mut messages: Vec<Any> = GENERIC_GRANTS
        .iter()
        .chain(std::iter::once(&MSG_ACCOUNT_DEPOSIT_TYPE_URL))
        .map(|msg_type_url| {
            any(
                MSG_REVOKE,
                &MsgRevoke {
                    granter: granter.to_owned(),
                    grantee: grantee.to_owned(),
                    msg_type_url: (*msg_type_url).to_owned(),
                },
            )
        })
        .collect();
    messages.push(any(
        MSG_REVOKE_ALLOWANCE,
        &MsgRevokeAllowance {
            granter: granter.to_owned(),
            grantee: grantee.to_owned(),
        },
    ));
    messages
}

/// `MsgExec`: the grantee running `messages` on the granter's behalf (each inner
/// message names the granter as its signer; the chain checks a grant for each).
pub fn exec_message(grantee: &str, messages: Vec<Any>) -> Any {
    any(
        MSG_EXEC,
        &MsgExec {
            grantee: grantee.to_owned(),
            msgs: messages,
        },
    )
}

/// The document collection ephemeral keys are kept in (key: the key's id).
pub const EPHEMERAL_KEYS_COLLECTION: &str = "ephemeral_keys";
/// The environment variable the passphrase of sealed keys is read from by default.
pub const DEFAULT_PASSPHRASE_ENV: &str = "MORPHEUS_KEYS_PASSPHRASE";

/// Where an ephemeral key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EphemeralStatus {
    /// Generated and stored; its grant transaction is on its way.
    Granting,
    /// Granted on chain: it signs until it expires.
    Active,
    /// Its grants were revoked (or had expired) and its key material destroyed.
    Revoked,
    /// The chain refused its grant; its key material was destroyed.
    Failed,
}

impl std::fmt::Display for EphemeralStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Granting => "granting",
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Failed => "failed",
        })
    }
}

/// One ephemeral key as stored (collection [`EPHEMERAL_KEYS_COLLECTION`]): its key
/// material only ever sealed, and gone once it is revoked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EphemeralRecord {
    /// `eph-…`, unique.
    pub id: String,
    /// The key's address (the grantee).
    pub address: String,
    /// Who granted it (the owner whose funds it spends).
    pub granter: String,
    /// The key, sealed by [`EphemeralKey::seal`]; `None` once destroyed.
    pub sealed_key: Option<String>,
    /// When every grant expires.
    pub expires_at: DateTime<Utc>,
    /// The deposit authorization's spend limit (`20000000uakt`).
    pub spend_limit: String,
    /// The fee allowance's limit.
    pub fee_limit: String,
    /// The message types it may sign for the granter.
    pub grants: Vec<String>,
    /// Where it is in its life.
    pub status: EphemeralStatus,
    /// The grant transaction, once it landed.
    #[serde(default)]
    pub grant_tx: Option<String>,
    /// The revoke transaction, if its grants were revoked on chain.
    #[serde(default)]
    pub revoke_tx: Option<String>,
    /// When it was generated.
    pub created_at: DateTime<Utc>,
    /// The run that created it.
    #[serde(default)]
    pub run_id: Option<String>,
}

impl EphemeralRecord {
    /// Whether it may sign at `now`: granted and not expired.
    pub fn signs_at(&self, now: DateTime<Utc>) -> bool {
        self.status == EphemeralStatus::Active && self.expires_at > now && self.sealed_key.is_some()
    }
}

/// Every message type [`grant_messages`] authorizes (the fee allowance aside).
pub fn granted_message_types() -> Vec<String> {
    GENERIC_GRANTS
        .iter()
        .chain(std::iter::once(&MSG_ACCOUNT_DEPOSIT_TYPE_URL))
        .map(|t| (*t).to_owned())
        .collect()
}

/// Where the passphrase of sealed keys is: only the variable's name or the file's path
/// is configured, never the passphrase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PassphraseSource {
    /// In this environment variable.
    Env(String),
    /// In this file (one trailing newline dropped).
    File(PathBuf),
}

impl Default for PassphraseSource {
    fn default() -> Self {
        Self::Env(DEFAULT_PASSPHRASE_ENV.to_owned())
    }
}

impl std::fmt::Display for PassphraseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(name) => write!(f, "${name}"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl PassphraseSource {
    /// The passphrase. Errors say where it was looked for, never any part of it.
    pub fn read(&self) -> Result<Zeroizing<String>, String> {
        let text = Zeroizing::new(match self {
            Self::Env(name) => std::env::var(name).map_err(|_| {
                format!("the ephemeral keys' passphrase: environment variable {name} is not set")
            })?,
            Self::File(path) => std::fs::read_to_string(path).map_err(|error| {
                format!(
                    "the ephemeral keys' passphrase: cannot read {}: {}",
                    path.display(),
                    error.kind()
                )
            })?,
        });
        let trimmed = text.strip_suffix('\n').unwrap_or(&text);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(format!("the ephemeral keys' passphrase in {self} is empty"));
        }
        Ok(Zeroizing::new(trimmed.to_owned()))
    }
}

/// `[cosmos.ephemeral]`: automation signs with the granter's ephemeral keys instead of
/// a key of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EphemeralSigning {
    /// The owner whose grants the keys hold (deployments are the granter's).
    pub granter: String,
    /// One key by id; default: the granter's active key that expires last, so a
    /// rotation's new key takes over as soon as it is granted.
    #[serde(default)]
    pub key: Option<String>,
    /// Where the passphrase the keys are sealed with is.
    #[serde(default)]
    pub passphrase: PassphraseSource,
}

/// The granter's ephemeral keys as the `cosmos` executor signs with them: read from
/// the document store, opened with the configured passphrase (once per key, in memory).
pub struct EphemeralKeyring {
    documents: Documents,
    settings: EphemeralSigning,
    prefix: String,
    opened: Mutex<HashMap<String, Arc<Signer>>>,
}

impl std::fmt::Debug for EphemeralKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EphemeralKeyring")
            .field("granter", &self.settings.granter)
            .finish()
    }
}

fn rotate_hint(granter: &str) -> String {
    format!(
        "create a new one with `morpheus keys ephemeral create --granter <key of {granter}>`, \
         or schedule `keys.ephemeral.rotate` to replace keys before they expire"
    )
}

impl EphemeralKeyring {
    /// The keys of `settings.granter` in `documents`, addresses under `prefix`.
    pub fn new(documents: Documents, settings: EphemeralSigning, prefix: &str) -> Self {
        Self {
            documents,
            settings,
            prefix: prefix.to_owned(),
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// The granter.
    pub fn granter(&self) -> &str {
        &self.settings.granter
    }

    /// The key to sign with at `now`, opened, and its record. An expired, revoked or
    /// missing key is a permanent error that says how to rotate.
    pub async fn current(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(Arc<Signer>, EphemeralRecord), StepError> {
        let granter = &self.settings.granter;
        let record = match &self.settings.key {
            Some(id) => {
                let record = self
                    .documents
                    .get::<EphemeralRecord>(EPHEMERAL_KEYS_COLLECTION, id)
                    .await
                    .map_err(|error| StepError::retryable(format!("ephemeral keys: {error}")))?
                    .ok_or_else(|| {
                        StepError::permanent(format!(
                            "ephemeral key {id} is unknown (`morpheus keys ephemeral list` shows the keys)"
                        ))
                    })?
                    .value;
                if !record.signs_at(now) {
                    return Err(StepError::permanent(unusable(&record, now)));
                }
                record
            }
            None => {
                let keys = self
                    .documents
                    .list::<EphemeralRecord>(
                        &DocumentQuery::new(EPHEMERAL_KEYS_COLLECTION)
                            .field_equals("granter", granter.as_str())
                            .limit(1_000),
                    )
                    .await
                    .map_err(|error| StepError::retryable(format!("ephemeral keys: {error}")))?;
                let usable = keys
                    .iter()
                    .filter(|key| key.value.signs_at(now))
                    .max_by_key(|key| key.value.expires_at);
                match usable {
                    Some(key) => key.value.clone(),
                    None => {
                        let newest = keys.iter().find(|key| {
                            key.value.status != EphemeralStatus::Granting
                                && key.value.status != EphemeralStatus::Failed
                        });
                        return Err(StepError::permanent(match newest {
                            Some(key) => unusable(&key.value, now),
                            None => {
                                format!("{granter} has no ephemeral key: {}", rotate_hint(granter))
                            }
                        }));
                    }
                }
            }
        };
        if let Some(signer) = self.opened.lock().expect("not poisoned").get(&record.id) {
            return Ok((signer.clone(), record));
        }
        let sealed = record.sealed_key.clone().unwrap_or_default();
        let passphrase = self
            .settings
            .passphrase
            .read()
            .map_err(StepError::permanent)?;
        let prefix = self.prefix.clone();
        let id = record.id.clone();
        // scrypt takes a tenth of a second: off the async threads.
        let signer = tokio::task::spawn_blocking(move || {
            let key = EphemeralKey::open(&sealed, &passphrase)
                .map_err(|error| format!("ephemeral key {id}: {error}"))?;
            key.signer(&prefix).map_err(|error| error.to_string())
        })
        .await
        .map_err(|error| StepError::retryable(format!("opening the ephemeral key: {error}")))?
        .map_err(StepError::permanent)?;
        if signer.address() != record.address {
            return Err(StepError::permanent(format!(
                "ephemeral key {} opens to {}, not its recorded address {}",
                record.id,
                signer.address(),
                record.address
            )));
        }
        let signer = Arc::new(signer);
        self.opened
            .lock()
            .expect("not poisoned")
            .insert(record.id.clone(), signer.clone());
        Ok((signer, record))
    }
}

/// Why `record` cannot sign at `now`, and what to do.
fn unusable(record: &EphemeralRecord, now: DateTime<Utc>) -> String {
    let (id, granter) = (&record.id, &record.granter);
    match record.status {
        EphemeralStatus::Revoked => {
            format!(
                "ephemeral key {id} of {granter} was revoked: {}",
                rotate_hint(granter)
            )
        }
        EphemeralStatus::Failed | EphemeralStatus::Granting => format!(
            "ephemeral key {id} of {granter} was never granted on chain: {}",
            rotate_hint(granter)
        ),
        EphemeralStatus::Active if record.expires_at <= now => format!(
            "ephemeral key {id} of {granter} expired at {}: {}",
            record
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            rotate_hint(granter)
        ),
        EphemeralStatus::Active => format!(
            "ephemeral key {id} of {granter} has no key material: {}",
            rotate_hint(granter)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_with_its_passphrase_only() {
        let key = EphemeralKey::generate();
        let address = key.signer("akash").unwrap().address().to_owned();
        let sealed = key.seal("correct horse").unwrap();
        assert!(!sealed.contains(&hex::encode(key.secret.as_slice())));
        let opened = EphemeralKey::open(&sealed, "correct horse").unwrap();
        assert_eq!(opened.signer("akash").unwrap().address(), address);
        let wrong = EphemeralKey::open(&sealed, "battery staple").unwrap_err();
        assert!(wrong.contains("wrong passphrase"), "{wrong}");
        let mut damaged = sealed.into_bytes();
        let at = damaged.len() - 10;
        damaged[at] = if damaged[at] == b'A' { b'B' } else { b'A' };
        let damaged = String::from_utf8(damaged).unwrap();
        assert!(EphemeralKey::open(&damaged, "correct horse").is_err());
    }

    #[test]
    fn the_grants_cover_exactly_the_deployment_messages_deposits_and_fees() {
        let expires = DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let messages = grant_messages(
            "akash1owner",
            "akash1eph",
            expires,
            &Coin::new(20_000_000, "uakt"),
            &Coin::new(1_000_000, "uakt"),
        );
        let types: Vec<&str> = messages.iter().map(|m| m.type_url.as_str()).collect();
        assert_eq!(
            types,
            [
                MSG_GRANT,
                MSG_GRANT,
                MSG_GRANT,
                MSG_GRANT,
                MSG_GRANT_ALLOWANCE
            ]
        );
        let mut granted = Vec::new();
        for message in &messages[..4] {
            let grant = MsgGrant::decode(message.value.as_slice()).unwrap();
            assert_eq!(
                (grant.granter.as_str(), grant.grantee.as_str()),
                ("akash1owner", "akash1eph")
            );
            let inner = grant.grant.unwrap();
            assert_eq!(inner.expiration.unwrap().seconds, expires.timestamp());
            let authorization = inner.authorization.unwrap();
            match authorization.type_url.as_str() {
                GENERIC_AUTHORIZATION => granted.push(
                    GenericAuthorization::decode(authorization.value.as_slice())
                        .unwrap()
                        .msg,
                ),
                DEPOSIT_AUTHORIZATION => {
                    let deposit =
                        DepositAuthorization::decode(authorization.value.as_slice()).unwrap();
                    assert_eq!(deposit.scopes, [SCOPE_DEPLOYMENT]);
                    let limit = deposit.spend_limit.unwrap();
                    assert_eq!(
                        (limit.denom.as_str(), limit.amount.as_str()),
                        ("uakt", "20000000")
                    );
                    granted.push(MSG_ACCOUNT_DEPOSIT_TYPE_URL.to_owned());
                }
                other => panic!("unexpected authorization {other}"),
            }
        }
        assert_eq!(
            granted,
            [
                MSG_CREATE_DEPLOYMENT_TYPE_URL,
                MSG_UPDATE_DEPLOYMENT_TYPE_URL,
                MSG_CLOSE_DEPLOYMENT_TYPE_URL,
                MSG_ACCOUNT_DEPOSIT_TYPE_URL
            ]
        );
        assert!(!granted
            .iter()
            .any(|t| t.contains("bank") || t.contains("authz")));
        let allowance = MsgGrantAllowance::decode(messages[4].value.as_slice()).unwrap();
        let basic = BasicAllowance::decode(allowance.allowance.unwrap().value.as_slice()).unwrap();
        assert_eq!(basic.spend_limit[0].amount, "1000000");
        assert_eq!(basic.expiration.unwrap().seconds, expires.timestamp());

        let revokes = revoke_messages("akash1owner", "akash1eph");
        let revoked: Vec<String> = revokes[..4]
            .iter()
            .map(|m| MsgRevoke::decode(m.value.as_slice()).unwrap().msg_type_url)
            .collect();
        assert_eq!(revoked, granted);
        assert_eq!(revokes[4].type_url, MSG_REVOKE_ALLOWANCE);
    }
}
