//! Akash deposit messages as hand-written prost types, encoded into `Any`.
//!
//! Field numbers follow the Akash protobuf definitions (`akash-network/chain-sdk`,
//! checked against its generated encoders):
//!
//! | message | fields |
//! |---|---|
//! | `akash.escrow.v1.MsgAccountDeposit` | `signer = 1` (string), `id = 2` (`akash.escrow.id.v1.Account`), `deposit = 3` (`akash.base.deposit.v1.Deposit`) |
//! | `akash.escrow.id.v1.Account` | `scope = 1` (enum `Scope`: invalid 0, deployment 1, bid 2), `xid = 2` (string, `"{owner}/{dseq}"` for a deployment) |
//! | `akash.base.deposit.v1.Deposit` | `amount = 1` (`cosmos.base.v1beta1.Coin`), `sources = 5` (repeated enum `Source`: invalid 0, balance 1, grant 2; written unpacked like the reference encoder) |
//! | `akash.deployment.v1beta3.MsgDepositDeployment` | `id = 1` (`DeploymentID`), `amount = 2` (`Coin`), `depositor = 3` (string) |
//! | `akash.deployment.v1beta3.DeploymentID` | `owner = 1` (string), `dseq = 2` (uint64) |
//!
//! [`DepositIntent`] is the version-independent meaning of either message. The devnet
//! simulator (`morpheus-devnets`) decodes transactions with its own message types, never
//! these, so an encoding mistake here cannot be mirrored by the oracle meant to catch it.

use cosmrs::proto::cosmos::base::v1beta1::Coin as ProtoCoin;
use cosmrs::Any;
use prost::Message;

use super::config::MsgVersion;

/// Type URL of the current deposit message.
pub const MSG_ACCOUNT_DEPOSIT_TYPE_URL: &str = "/akash.escrow.v1.MsgAccountDeposit";

/// Type URL of the pre-escrow.v1 deposit message.
pub const MSG_DEPOSIT_DEPLOYMENT_TYPE_URL: &str = "/akash.deployment.v1beta3.MsgDepositDeployment";

/// `akash.escrow.id.v1.Scope`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EscrowScope {
    /// Unset.
    Invalid = 0,
    /// A deployment's escrow account.
    Deployment = 1,
    /// A bid's escrow account.
    Bid = 2,
}

/// `akash.escrow.id.v1.Account`: which escrow account.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EscrowAccountId {
    /// An [`EscrowScope`].
    #[prost(enumeration = "EscrowScope", tag = "1")]
    pub scope: i32,
    /// For a deployment: `"{owner}/{dseq}"`.
    #[prost(string, tag = "2")]
    pub xid: String,
}

/// `akash.base.deposit.v1.Source`: where deposited funds come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DepositSource {
    /// Unset.
    Invalid = 0,
    /// The signer's bank balance.
    Balance = 1,
    /// An authz grant.
    Grant = 2,
}

/// `akash.base.deposit.v1.Deposit`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Deposit {
    /// How much.
    #[prost(message, optional, tag = "1")]
    pub amount: Option<ProtoCoin>,
    /// [`DepositSource`]s, each at most once.
    #[prost(enumeration = "DepositSource", repeated, packed = "false", tag = "5")]
    pub sources: Vec<i32>,
}

/// `akash.escrow.v1.MsgAccountDeposit`: deposit into an escrow account.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MsgAccountDeposit {
    /// Who pays and signs (need not own the deployment).
    #[prost(string, tag = "1")]
    pub signer: String,
    /// The escrow account.
    #[prost(message, optional, tag = "2")]
    pub id: Option<EscrowAccountId>,
    /// Amount and sources.
    #[prost(message, optional, tag = "3")]
    pub deposit: Option<Deposit>,
}

/// `akash.deployment.v1beta3.DeploymentID`, laid out as `akash.deployment.v1.DeploymentID`
/// too (`owner = 1`, `dseq = 2`), so it serves both message generations.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeploymentId {
    /// The deployment's owner.
    #[prost(string, tag = "1")]
    pub owner: String,
    /// Its sequence number.
    #[prost(uint64, tag = "2")]
    pub dseq: u64,
}

/// `akash.deployment.v1beta3.MsgDepositDeployment`: the older deposit message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MsgDepositDeployment {
    /// The deployment.
    #[prost(message, optional, tag = "1")]
    pub id: Option<DeploymentId>,
    /// How much.
    #[prost(message, optional, tag = "2")]
    pub amount: Option<ProtoCoin>,
    /// Who pays and signs.
    #[prost(string, tag = "3")]
    pub depositor: String,
}

/// What a deposit message means, whichever version carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositIntent {
    /// The paying (and signing) account.
    pub signer: String,
    /// The deployment's owner.
    pub owner: String,
    /// The deployment's sequence number.
    pub dseq: u64,
    /// Amount in base units.
    pub amount: u128,
    /// Denomination.
    pub denom: String,
    /// Paid from the owner's balance through the signer's `DepositAuthorization`
    /// (the `grant` source) instead of the signer's own balance. Only the
    /// `escrow.v1` message can say so.
    pub from_grant: bool,
}

impl DepositIntent {
    /// The message of `version`, packed into an `Any`.
    pub fn to_any(&self, version: MsgVersion) -> Any {
        let amount = ProtoCoin {
            denom: self.denom.clone(),
            amount: self.amount.to_string(),
        };
        match version {
            MsgVersion::EscrowV1 => Any {
                type_url: MSG_ACCOUNT_DEPOSIT_TYPE_URL.to_owned(),
                value: MsgAccountDeposit {
                    signer: self.signer.clone(),
                    id: Some(EscrowAccountId {
                        scope: EscrowScope::Deployment as i32,
                        xid: format!("{}/{}", self.owner, self.dseq),
                    }),
                    deposit: Some(Deposit {
                        amount: Some(amount),
                        sources: vec![if self.from_grant {
                            DepositSource::Grant as i32
                        } else {
                            DepositSource::Balance as i32
                        }],
                    }),
                }
                .encode_to_vec(),
            },
            MsgVersion::DeploymentV1beta3 => Any {
                type_url: MSG_DEPOSIT_DEPLOYMENT_TYPE_URL.to_owned(),
                value: MsgDepositDeployment {
                    id: Some(DeploymentId {
                        owner: self.owner.clone(),
                        dseq: self.dseq,
                    }),
                    amount: Some(amount),
                    depositor: self.signer.clone(),
                }
                .encode_to_vec(),
            },
        }
    }

    /// Decodes and checks either deposit message (what a chain's `ValidateBasic` would
    /// check: known type, deployment scope, `owner/dseq` id, a positive integer amount,
    /// the balance as the only source).
    pub fn from_any(any: &Any) -> Result<(Self, MsgVersion), String> {
        match any.type_url.as_str() {
            MSG_ACCOUNT_DEPOSIT_TYPE_URL => {
                let msg = MsgAccountDeposit::decode(any.value.as_slice())
                    .map_err(|error| format!("cannot decode MsgAccountDeposit: {error}"))?;
                let id = msg
                    .id
                    .ok_or("MsgAccountDeposit without an escrow account id")?;
                if id.scope != EscrowScope::Deployment as i32 {
                    return Err(format!(
                        "escrow scope {} is not supported (only deployment)",
                        id.scope
                    ));
                }
                let (owner, dseq) = parse_deployment_xid(&id.xid).map_err(|e| e.0)?;
                let deposit = msg.deposit.ok_or("MsgAccountDeposit without a deposit")?;
                let from_grant = match deposit.sources.as_slice() {
                    [source] if *source == DepositSource::Balance as i32 => false,
                    [source] if *source == DepositSource::Grant as i32 => true,
                    sources => {
                        return Err(format!(
                        "deposit sources {sources:?} are not supported (only [balance] or [grant])"
                    ))
                    }
                };
                let (amount, denom) = parse_proto_coin(deposit.amount)?;
                Ok((
                    Self {
                        signer: msg.signer,
                        owner,
                        dseq,
                        amount,
                        denom,
                        from_grant,
                    },
                    MsgVersion::EscrowV1,
                ))
            }
            MSG_DEPOSIT_DEPLOYMENT_TYPE_URL => {
                let msg = MsgDepositDeployment::decode(any.value.as_slice())
                    .map_err(|error| format!("cannot decode MsgDepositDeployment: {error}"))?;
                let id = msg
                    .id
                    .ok_or("MsgDepositDeployment without a deployment id")?;
                let (amount, denom) = parse_proto_coin(msg.amount)?;
                Ok((
                    Self {
                        signer: msg.depositor,
                        owner: id.owner,
                        dseq: id.dseq,
                        amount,
                        denom,
                        from_grant: false,
                    },
                    MsgVersion::DeploymentV1beta3,
                ))
            }
            other => Err(format!("unable to resolve type URL {other}")),
        }
    }
}

/// A deployment escrow id that is not `"{owner}/{dseq}"`; the message says which part
/// is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEscrowId(pub String);

/// Splits a deployment escrow id `"{owner}/{dseq}"`.
pub fn parse_deployment_xid(xid: &str) -> Result<(String, u64), InvalidEscrowId> {
    let (owner, dseq) = xid
        .split_once('/')
        .ok_or_else(|| InvalidEscrowId(format!("escrow id '{xid}' is not owner/dseq")))?;
    let dseq = dseq
        .parse()
        .map_err(|_| InvalidEscrowId(format!("escrow id '{xid}' has no numeric dseq")))?;
    if owner.is_empty() {
        return Err(InvalidEscrowId(format!("escrow id '{xid}' has no owner")));
    }
    Ok((owner.to_owned(), dseq))
}

fn parse_proto_coin(coin: Option<ProtoCoin>) -> Result<(u128, String), String> {
    let coin = coin.ok_or("deposit without an amount")?;
    let amount: u128 = coin
        .amount
        .parse()
        .map_err(|_| format!("deposit amount '{}' is not an integer", coin.amount))?;
    if amount == 0 {
        return Err("deposit amount must be positive".to_owned());
    }
    super::amount::validate_denom(&coin.denom)?;
    Ok((amount, coin.denom))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent() -> DepositIntent {
        DepositIntent {
            signer: "akash1signer".into(),
            owner: "akash1owner".into(),
            dseq: 1234,
            amount: 5_000_000,
            denom: "uakt".into(),
            from_grant: false,
        }
    }

    #[test]
    fn both_versions_round_trip() {
        for version in [MsgVersion::EscrowV1, MsgVersion::DeploymentV1beta3] {
            let any = intent().to_any(version);
            assert_eq!(DepositIntent::from_any(&any).unwrap(), (intent(), version));
        }
    }

    /// The bytes a reference encoder writes for the same message (field tags 0x0a,
    /// 0x12, 0x1a; scope 0x08 0x01; sources written unpacked as 0x28 0x01).
    #[test]
    fn account_deposit_wire_format_matches_the_reference_encoder() {
        let bytes = intent().to_any(MsgVersion::EscrowV1).value;
        let mut expected = vec![0x0a, 12];
        expected.extend_from_slice(b"akash1signer");
        let xid = b"akash1owner/1234";
        expected.extend_from_slice(&[0x12, (2 + 2 + xid.len()) as u8, 0x08, 0x01, 0x12]);
        expected.push(xid.len() as u8);
        expected.extend_from_slice(xid);
        let coin = [&[0x0a, 4][..], b"uakt", &[0x12, 7], b"5000000"].concat();
        let mut deposit = vec![0x0a, coin.len() as u8];
        deposit.extend_from_slice(&coin);
        deposit.extend_from_slice(&[0x28, 0x01]);
        expected.extend_from_slice(&[0x1a, deposit.len() as u8]);
        expected.extend_from_slice(&deposit);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn rejects_what_validate_basic_would() {
        let mut msg =
            MsgAccountDeposit::decode(intent().to_any(MsgVersion::EscrowV1).value.as_slice())
                .unwrap();
        msg.id.as_mut().unwrap().scope = EscrowScope::Bid as i32;
        let any = Any {
            type_url: MSG_ACCOUNT_DEPOSIT_TYPE_URL.into(),
            value: msg.encode_to_vec(),
        };
        assert!(DepositIntent::from_any(&any).unwrap_err().contains("scope"));

        let zero = DepositIntent {
            amount: 0,
            ..intent()
        };
        let error = DepositIntent::from_any(&zero.to_any(MsgVersion::DeploymentV1beta3));
        assert!(error.unwrap_err().contains("positive"));

        let unknown = Any {
            type_url: "/cosmos.bank.v1beta1.MsgSend".into(),
            value: vec![],
        };
        assert!(DepositIntent::from_any(&unknown)
            .unwrap_err()
            .contains("unable to resolve type URL"));
        assert!(parse_deployment_xid("akash1owner").is_err());
        assert!(parse_deployment_xid("akash1owner/x").is_err());
    }
}
