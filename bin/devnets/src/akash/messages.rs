//! The Akash deposit messages as the simulator reads them: its own prost types, written
//! from the Akash protobuf definitions (`akash-network/chain-sdk`, `proto/node/akash/…`),
//! not shared with the `cosmos` executor that signs them. The simulator is the oracle
//! the client is tested against; if both used one set of types, an encoding mistake in
//! the client would decode "correctly" here and no test would see it.
//!
//! | message (type URL) | fields, from the `.proto` files |
//! |---|---|
//! | `/akash.escrow.v1.MsgAccountDeposit` (`escrow/v1/msg.proto`) | `string owner = 1` (the signer, who pays), `akash.escrow.id.v1.Account id = 2`, `akash.base.deposit.v1.Deposit deposit = 3` |
//! | `akash.escrow.id.v1.Account` (`escrow/id/v1/id.proto`) | `Scope scope = 1` (`invalid = 0`, `deployment = 1`, `bid = 2`), `string xid = 2` (`"{owner}/{dseq}"` for a deployment) |
//! | `akash.base.deposit.v1.Deposit` (`base/deposit/v1/deposit.proto`) | `cosmos.base.v1beta1.Coin amount = 1`, `repeated Source sources = 5` (`invalid = 0`, `balance = 1`, `grant = 2`) |
//! | `/akash.deployment.v1beta3.MsgDepositDeployment` (`deployment/v1beta3/deploymentmsg.proto`) | `DeploymentID id = 1`, `cosmos.base.v1beta1.Coin amount = 2`, `string depositor = 3` |
//! | `akash.deployment.v1beta3.DeploymentID` | `string owner = 1`, `uint64 dseq = 2` |
//!
//! A repeated enum is packed by default in proto3; a decoder must accept both the packed
//! and the unpacked form, and prost's does.

use cosmrs::proto::cosmos::base::v1beta1::Coin;
use cosmrs::Any;
use prost::Message;

/// Which of the two deposit messages carried a deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepositMessage {
    /// `/akash.escrow.v1.MsgAccountDeposit`: current chains. Its module errors are
    /// reported in the `escrow` codespace.
    AccountDeposit,
    /// `/akash.deployment.v1beta3.MsgDepositDeployment`: older chains. Its module errors
    /// are reported in the `deployment` codespace.
    DepositDeployment,
}

impl DepositMessage {
    /// The message's type URL, as it appears in a transaction's `Any`.
    pub fn type_url(self) -> &'static str {
        match self {
            Self::AccountDeposit => "/akash.escrow.v1.MsgAccountDeposit",
            Self::DepositDeployment => "/akash.deployment.v1beta3.MsgDepositDeployment",
        }
    }
}

/// A decoded deposit: what either message asks the chain to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositRequest {
    /// The account that signs and pays (`owner` of `MsgAccountDeposit`, `depositor`
    /// of `MsgDepositDeployment`).
    pub signer: String,
    /// The deployment's owner.
    pub owner: String,
    /// The deployment's sequence number.
    pub dseq: u64,
    /// Amount in the denomination's base unit (positive).
    pub amount: u128,
    /// Denomination of the amount.
    pub denom: String,
    /// Which message carried it.
    pub message: DepositMessage,
}

/// Why a message was refused before execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// Not a deposit message this simulator knows (the SDK's "unable to resolve type
    /// URL", a decoding failure of the transaction).
    UnknownType(String),
    /// Undecodable bytes or a deposit that fails the message's own validation (what
    /// `ValidateBasic` refuses: an invalid request).
    Invalid(String),
}

/// `akash.escrow.v1.MsgAccountDeposit`.
#[derive(Clone, PartialEq, prost::Message)]
struct MsgAccountDeposit {
    #[prost(string, tag = "1")]
    owner: String,
    #[prost(message, optional, tag = "2")]
    id: Option<EscrowAccount>,
    #[prost(message, optional, tag = "3")]
    deposit: Option<Deposit>,
}

/// `akash.escrow.id.v1.Account`.
#[derive(Clone, PartialEq, prost::Message)]
struct EscrowAccount {
    #[prost(int32, tag = "1")]
    scope: i32,
    #[prost(string, tag = "2")]
    xid: String,
}

/// `akash.escrow.id.v1.Scope` value of a deployment's escrow account.
const SCOPE_DEPLOYMENT: i32 = 1;

/// `akash.base.deposit.v1.Deposit`.
#[derive(Clone, PartialEq, prost::Message)]
struct Deposit {
    #[prost(message, optional, tag = "1")]
    amount: Option<Coin>,
    #[prost(int32, repeated, tag = "5")]
    sources: Vec<i32>,
}

/// `akash.base.deposit.v1.Source` value of "from the signer's bank balance".
const SOURCE_BALANCE: i32 = 1;

/// `akash.deployment.v1beta3.MsgDepositDeployment`.
#[derive(Clone, PartialEq, prost::Message)]
struct MsgDepositDeployment {
    #[prost(message, optional, tag = "1")]
    id: Option<DeploymentId>,
    #[prost(message, optional, tag = "2")]
    amount: Option<Coin>,
    #[prost(string, tag = "3")]
    depositor: String,
}

/// `akash.deployment.v1beta3.DeploymentID`.
#[derive(Clone, PartialEq, prost::Message)]
struct DeploymentId {
    #[prost(string, tag = "1")]
    owner: String,
    #[prost(uint64, tag = "2")]
    dseq: u64,
}

/// Decodes one message of a transaction body and validates it as the chain's
/// `ValidateBasic` would: a deployment-scoped escrow id of the form `owner/dseq`, a
/// positive integer amount in a well-formed denomination, the balance as the only
/// source of funds. That the signer is the key's address is the ante handler's check.
pub fn decode_deposit(any: &Any) -> Result<DepositRequest, MessageError> {
    let invalid = |text: String| MessageError::Invalid(text);
    Ok(
        if any.type_url == DepositMessage::AccountDeposit.type_url() {
            let msg = MsgAccountDeposit::decode(any.value.as_slice())
                .map_err(|error| invalid(format!("cannot decode MsgAccountDeposit: {error}")))?;
            let id = msg
                .id
                .ok_or_else(|| invalid("MsgAccountDeposit has no escrow account id".into()))?;
            if id.scope != SCOPE_DEPLOYMENT {
                return Err(invalid(format!(
                    "escrow scope {} is not supported (only deployment)",
                    id.scope
                )));
            }
            let (owner, dseq) = split_xid(&id.xid).map_err(invalid)?;
            let deposit = msg
                .deposit
                .ok_or_else(|| invalid("MsgAccountDeposit has no deposit".into()))?;
            if deposit.sources != [SOURCE_BALANCE] {
                return Err(invalid(format!(
                    "deposit sources {:?} are not supported (only [balance])",
                    deposit.sources
                )));
            }
            let (amount, denom) = coin_amount(deposit.amount).map_err(invalid)?;
            DepositRequest {
                signer: msg.owner,
                owner,
                dseq,
                amount,
                denom,
                message: DepositMessage::AccountDeposit,
            }
        } else if any.type_url == DepositMessage::DepositDeployment.type_url() {
            let msg = MsgDepositDeployment::decode(any.value.as_slice())
                .map_err(|error| invalid(format!("cannot decode MsgDepositDeployment: {error}")))?;
            let id = msg
                .id
                .ok_or_else(|| invalid("MsgDepositDeployment has no deployment id".into()))?;
            let (amount, denom) = coin_amount(msg.amount).map_err(invalid)?;
            DepositRequest {
                signer: msg.depositor,
                owner: id.owner,
                dseq: id.dseq,
                amount,
                denom,
                message: DepositMessage::DepositDeployment,
            }
        } else {
            return Err(MessageError::UnknownType(format!(
                "unable to resolve type URL {}",
                any.type_url
            )));
        },
    )
}

/// Splits a deployment escrow id, `"{owner}/{dseq}"`.
fn split_xid(xid: &str) -> Result<(String, u64), String> {
    match xid.split_once('/') {
        Some((owner, dseq)) if !owner.is_empty() => dseq
            .parse()
            .map(|dseq| (owner.to_owned(), dseq))
            .map_err(|_| format!("escrow id '{xid}' has no numeric dseq")),
        _ => Err(format!("escrow id '{xid}' is not owner/dseq")),
    }
}

fn coin_amount(coin: Option<Coin>) -> Result<(u128, String), String> {
    let coin = coin.ok_or("deposit has no amount")?;
    let amount: u128 = coin
        .amount
        .parse()
        .map_err(|_| format!("deposit amount '{}' is not an integer", coin.amount))?;
    if amount == 0 {
        return Err("deposit amount must be positive".to_owned());
    }
    if !valid_denom(&coin.denom) {
        return Err(format!("'{}' is not a valid denomination", coin.denom));
    }
    Ok((amount, coin.denom))
}

/// The SDK's denomination rule: a letter, then 2 to 127 letters, digits or `/:._-`.
pub fn valid_denom(denom: &str) -> bool {
    let mut bytes = denom.bytes();
    let starts_with_letter = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    starts_with_letter
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"/:._-".contains(&b))
        && (3..=128).contains(&denom.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protobuf wire bytes written by hand from the `.proto` field numbers (tag byte =
    /// field << 3 | wire type), independent of any prost struct.
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    fn coin(denom: &str, amount: &str) -> Vec<u8> {
        [field(1, denom.as_bytes()), field(2, amount.as_bytes())].concat()
    }

    fn account_deposit(scope: u8, xid: &str, sources: &[u8]) -> Any {
        let id = [vec![0x08, scope], field(2, xid.as_bytes())].concat();
        let mut deposit = field(1, &coin("uakt", "5000000"));
        for source in sources {
            deposit.extend_from_slice(&[5 << 3, *source]); // unpacked varint, field 5
        }
        Any {
            type_url: "/akash.escrow.v1.MsgAccountDeposit".into(),
            value: [field(1, b"akash1signer"), field(2, &id), field(3, &deposit)].concat(),
        }
    }

    #[test]
    fn account_deposit_decodes_from_hand_written_wire_bytes() {
        let request = decode_deposit(&account_deposit(1, "akash1owner/1234", &[1])).unwrap();
        assert_eq!(
            request,
            DepositRequest {
                signer: "akash1signer".into(),
                owner: "akash1owner".into(),
                dseq: 1234,
                amount: 5_000_000,
                denom: "uakt".into(),
                message: DepositMessage::AccountDeposit,
            }
        );
    }

    #[test]
    fn packed_sources_decode_like_unpacked_ones() {
        let mut any = account_deposit(1, "akash1owner/7", &[]);
        // Re-encode the deposit with `sources` packed: field 5, length 1, value 1.
        let id = [vec![0x08, 1], field(2, b"akash1owner/7")].concat();
        let deposit = [field(1, &coin("uakt", "5000000")), field(5, &[1])].concat();
        any.value = [field(1, b"akash1signer"), field(2, &id), field(3, &deposit)].concat();
        assert_eq!(decode_deposit(&any).unwrap().dseq, 7);
    }

    #[test]
    fn deposit_deployment_decodes_from_hand_written_wire_bytes() {
        let id = [field(1, b"akash1owner"), vec![0x10, 42]].concat();
        let any = Any {
            type_url: "/akash.deployment.v1beta3.MsgDepositDeployment".into(),
            value: [
                field(1, &id),
                field(2, &coin("uakt", "77")),
                field(3, b"akash1payer"),
            ]
            .concat(),
        };
        let request = decode_deposit(&any).unwrap();
        assert_eq!(
            (
                request.signer.as_str(),
                request.owner.as_str(),
                request.dseq
            ),
            ("akash1payer", "akash1owner", 42)
        );
        assert_eq!(
            (request.amount, request.message),
            (77, DepositMessage::DepositDeployment)
        );
    }

    #[test]
    fn refuses_what_validate_basic_refuses() {
        let bid_scope = decode_deposit(&account_deposit(2, "akash1owner/1", &[1]));
        assert!(matches!(bid_scope, Err(MessageError::Invalid(e)) if e.contains("scope")));
        let grant = decode_deposit(&account_deposit(1, "akash1owner/1", &[2]));
        assert!(matches!(grant, Err(MessageError::Invalid(e)) if e.contains("sources")));
        let no_dseq = decode_deposit(&account_deposit(1, "akash1owner", &[1]));
        assert!(matches!(no_dseq, Err(MessageError::Invalid(e)) if e.contains("owner/dseq")));
        let unknown = decode_deposit(&Any {
            type_url: "/cosmos.bank.v1beta1.MsgSend".into(),
            value: vec![],
        });
        assert!(
            matches!(unknown, Err(MessageError::UnknownType(e)) if e.contains("unable to resolve type URL"))
        );
        assert!(valid_denom("uakt") && valid_denom("ibc/27394FB0"));
        assert!(!valid_denom("u") && !valid_denom("1akt") && !valid_denom("u akt"));
    }
}
