//! Building, signing (direct mode) and identifying transactions.

use cosmrs::proto::cosmos::tx::v1beta1::{AuthInfo as ProtoAuthInfo, TxRaw};
use cosmrs::tx::{Body, Fee, SignDoc, SignerInfo};
use cosmrs::Any;
use prost::Message;
use sha2::{Digest, Sha256};

use super::amount::Coin;
use super::keys::Signer;

/// A signed transaction: the exact bytes to broadcast and their hash. (The operations'
/// output, with these as base64, is [`super::SignedTx`].)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedTxBytes {
    /// Protobuf-encoded `TxRaw`.
    pub bytes: Vec<u8>,
    /// [`tx_hash`] of the bytes.
    pub hash: String,
}

/// The chain's id of a transaction: SHA-256 of its bytes, upper-case hex. The same
/// bytes always have the same hash, which is what makes re-broadcasting safe.
pub fn tx_hash(tx_bytes: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(tx_bytes))
}

/// What a transaction is signed for.
pub(crate) struct TxParams<'a> {
    pub chain_id: &'a str,
    pub account_number: u64,
    pub sequence: u64,
    pub memo: &'a str,
    pub fee: Coin,
    pub gas_limit: u64,
    /// Who pays the fee through a fee grant (`None`: the signer).
    pub fee_granter: Option<&'a str>,
}

fn body_and_auth_info(
    signer: &Signer,
    messages: Vec<Any>,
    params: &TxParams<'_>,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let body = Body::new(messages, params.memo, 0u32);
    let fee_coin = cosmrs::Coin::new(params.fee.amount, &params.fee.denom)
        .map_err(|error| format!("fee {}: {error}", params.fee))?;
    let mut fee = Fee::from_amount_and_gas(fee_coin, params.gas_limit);
    if let Some(granter) = params.fee_granter {
        fee.granter = Some(
            granter
                .parse()
                .map_err(|_| format!("fee granter '{granter}' is not a bech32 address"))?,
        );
    }
    let auth_info =
        SignerInfo::single_direct(Some(signer.public_key()), params.sequence).auth_info(fee);
    let body_bytes = body
        .into_bytes()
        .map_err(|error| format!("encode tx body: {error}"))?;
    let auth_info_bytes = auth_info
        .into_bytes()
        .map_err(|error| format!("encode auth info: {error}"))?;
    Ok((body_bytes, auth_info_bytes))
}

/// Signs `messages` in direct mode (`SignDoc` = body, auth info, chain id, account
/// number) and encodes the `TxRaw`.
pub(crate) fn sign(
    signer: &Signer,
    messages: Vec<Any>,
    params: &TxParams<'_>,
) -> Result<SignedTxBytes, String> {
    let (body_bytes, auth_info_bytes) = body_and_auth_info(signer, messages, params)?;
    let sign_doc = SignDoc {
        body_bytes,
        auth_info_bytes,
        chain_id: params.chain_id.to_owned(),
        account_number: params.account_number,
    };
    let raw = sign_doc
        .sign(signer.signing_key())
        .map_err(|error| format!("sign: {error}"))?;
    let bytes = raw
        .to_bytes()
        .map_err(|error| format!("encode tx: {error}"))?;
    let hash = tx_hash(&bytes);
    Ok(SignedTxBytes { bytes, hash })
}

/// The same transaction with an empty signature, for `simulate` (which checks
/// everything but the signature).
pub(crate) fn unsigned_for_simulation(
    signer: &Signer,
    messages: Vec<Any>,
    params: &TxParams<'_>,
) -> Result<Vec<u8>, String> {
    let (body_bytes, auth_info_bytes) = body_and_auth_info(signer, messages, params)?;
    Ok(TxRaw {
        body_bytes,
        auth_info_bytes,
        signatures: vec![Vec::new()],
    }
    .encode_to_vec())
}

/// Bytes that are not a signed transaction this client can read (`not a TxRaw: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TxDecodeError(pub String);

/// The sequence a transaction was signed with (its first signer's).
pub fn tx_sequence(tx_bytes: &[u8]) -> Result<u64, TxDecodeError> {
    let raw =
        TxRaw::decode(tx_bytes).map_err(|error| TxDecodeError(format!("not a TxRaw: {error}")))?;
    let auth_info = ProtoAuthInfo::decode(raw.auth_info_bytes.as_slice())
        .map_err(|error| TxDecodeError(format!("tx auth info: {error}")))?;
    auth_info
        .signer_infos
        .first()
        .map(|info| info.sequence)
        .ok_or_else(|| TxDecodeError("tx has no signer".to_owned()))
}

#[cfg(test)]
mod tests {
    use cosmrs::proto::cosmos::tx::v1beta1::{SignDoc as ProtoSignDoc, TxBody};
    use k256::ecdsa::signature::Verifier;

    use super::*;
    use crate::cosmos::akash::DepositIntent;
    use crate::cosmos::config::MsgVersion;

    const MNEMONIC: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    fn params() -> TxParams<'static> {
        TxParams {
            chain_id: "testnet-1",
            account_number: 7,
            sequence: 3,
            memo: "morpheus:run/step",
            fee: Coin::new(5000, "uakt"),
            gas_limit: 200_000,
            fee_granter: None,
        }
    }

    #[test]
    fn signed_bytes_verify_against_the_sign_doc_and_decode_back() {
        let signer = Signer::from_mnemonic(MNEMONIC, "m/44'/118'/0'/0/0", "akash").unwrap();
        let intent = DepositIntent {
            signer: signer.address().to_owned(),
            owner: signer.address().to_owned(),
            dseq: 42,
            amount: 1000,
            denom: "uakt".into(),
            from_grant: false,
        };
        let messages = vec![intent.to_any(MsgVersion::EscrowV1)];
        let signed = sign(&signer, messages.clone(), &params()).unwrap();
        assert_eq!(signed.hash, tx_hash(&signed.bytes));
        assert_eq!(signed.hash.len(), 64);
        assert_eq!(tx_sequence(&signed.bytes).unwrap(), 3);

        let raw = TxRaw::decode(signed.bytes.as_slice()).unwrap();
        let body = TxBody::decode(raw.body_bytes.as_slice()).unwrap();
        assert_eq!(body.memo, "morpheus:run/step");
        assert_eq!(
            DepositIntent::from_any(&body.messages[0]).unwrap().0,
            intent
        );
        let sign_doc = ProtoSignDoc {
            body_bytes: raw.body_bytes.clone(),
            auth_info_bytes: raw.auth_info_bytes.clone(),
            chain_id: "testnet-1".into(),
            account_number: 7,
        }
        .encode_to_vec();
        let verifying_key =
            k256::ecdsa::VerifyingKey::from_sec1_bytes(&signer.public_key().to_bytes()).unwrap();
        let signature = k256::ecdsa::Signature::from_slice(&raw.signatures[0]).unwrap();
        verifying_key.verify(&sign_doc, &signature).unwrap();

        // Another chain id is another message: the signature does not carry over.
        let other_chain = ProtoSignDoc {
            chain_id: "akashnet-2".into(),
            ..ProtoSignDoc::decode(sign_doc.as_slice()).unwrap()
        }
        .encode_to_vec();
        assert!(verifying_key.verify(&other_chain, &signature).is_err());

        // Signing is deterministic (RFC 6979): the same inputs give the same hash.
        assert_eq!(sign(&signer, messages.clone(), &params()).unwrap(), signed);

        let unsigned = unsigned_for_simulation(&signer, messages, &params()).unwrap();
        let raw = TxRaw::decode(unsigned.as_slice()).unwrap();
        assert_eq!(raw.signatures, vec![Vec::<u8>::new()]);
    }

    #[test]
    fn garbage_has_no_sequence() {
        assert!(tx_sequence(b"\xff\xff").is_err());
    }
}
