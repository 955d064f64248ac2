//! Choosing a provider's bid: a pure function of the policy and the bids, so that the
//! choice is a table test and every decision can be logged with its numbers.
//!
//! A bid is acceptable when its denom is the policy's, its price per block is within
//! the ceiling (when there is one), its provider is on the allow list (when there is
//! one) and not on the deny list, and the provider has every required attribute. Of
//! the acceptable bids the cheapest wins; equal prices go to the lowest provider
//! address, so the choice never depends on the order the chain listed them in.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::topup::decide::Dec;

/// What the deploy accepts from a provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BidPolicy {
    /// The highest price per block, in `denom` (a decimal: bids are priced with 18
    /// decimals). `None`: any price (the group's own ceiling still holds on chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price_per_block: Option<Dec>,
    /// Only bids in this denom.
    #[serde(default = "default_denom")]
    pub denom: String,
    /// Only these providers (addresses); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Never these providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Provider attributes a bid's provider must have (`{"gpu-model": "rtx4090"}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_attributes: BTreeMap<String, String>,
}

fn default_denom() -> String {
    "uakt".into()
}

/// One open bid, with its provider's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The bidding provider's address.
    pub provider: String,
    /// The group the bid is for.
    pub gseq: u32,
    /// The order the bid is for.
    pub oseq: u32,
    /// The provider's bid sequence.
    pub bseq: u32,
    /// Price per block.
    pub price: Dec,
    /// The price's denom.
    pub denom: String,
    /// The provider's attributes, as the chain lists them.
    pub attributes: BTreeMap<String, String>,
}

/// Why a bid was not taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// Priced in another denom.
    WrongDenom,
    /// Above the ceiling.
    TooExpensive,
    /// Not on the allow list.
    NotAllowed,
    /// On the deny list.
    Denied,
    /// The provider lacks a required attribute (or has another value).
    MissingAttribute {
        /// The attribute.
        key: String,
        /// What the policy requires.
        wanted: String,
        /// What the provider has, if anything.
        found: Option<String>,
    },
    /// Acceptable, but another bid was cheaper (or as cheap from a lower address).
    Outbid,
}

/// What the policy made of one bid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidDecision {
    /// The bid.
    pub candidate: Candidate,
    /// `None`: chosen.
    pub rejection: Option<Rejection>,
}

impl BidDecision {
    /// Whether this bid was the one chosen.
    pub fn chosen(&self) -> bool {
        self.rejection.is_none()
    }

    /// The line the run logs for it, with its numbers.
    pub fn log_line(&self, policy: &BidPolicy) -> String {
        let bid = &self.candidate;
        let subject = format!(
            "bid gseq={} oseq={} provider={} price={}{}/block",
            bid.gseq, bid.oseq, bid.provider, bid.price, bid.denom
        );
        match &self.rejection {
            None => format!("{subject}: chosen (the cheapest acceptable bid)"),
            Some(rejection) => format!("{subject}: rejected, {}", rejection.explain(policy)),
        }
    }
}

impl Rejection {
    fn explain(&self, policy: &BidPolicy) -> String {
        match self {
            Self::WrongDenom => format!("not priced in {}", policy.denom),
            Self::TooExpensive => format!(
                "above the ceiling of {}{}/block",
                policy.max_price_per_block.unwrap_or_default(),
                policy.denom
            ),
            Self::NotAllowed => "provider not on the allow list".into(),
            Self::Denied => "provider on the deny list".into(),
            Self::MissingAttribute { key, wanted, found } => match found {
                Some(found) => format!("provider has {key}={found}, {key}={wanted} required"),
                None => format!("provider lacks {key}={wanted}"),
            },
            Self::Outbid => "a cheaper acceptable bid exists".into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain(&BidPolicy::default()))
    }
}

/// Judges every bid of one order: at most one decision is `chosen`. The decisions are
/// in the order given.
pub fn choose_bid(policy: &BidPolicy, candidates: &[Candidate]) -> Vec<BidDecision> {
    let mut decisions: Vec<BidDecision> = candidates
        .iter()
        .map(|candidate| BidDecision {
            candidate: candidate.clone(),
            rejection: reject(policy, candidate),
        })
        .collect();
    let best = decisions
        .iter()
        .enumerate()
        .filter(|(_, decision)| decision.rejection.is_none())
        .min_by(|(_, left), (_, right)| {
            (left.candidate.price, &left.candidate.provider)
                .cmp(&(right.candidate.price, &right.candidate.provider))
        })
        .map(|(index, _)| index);
    for (index, decision) in decisions.iter_mut().enumerate() {
        if decision.rejection.is_none() && Some(index) != best {
            decision.rejection = Some(Rejection::Outbid);
        }
    }
    decisions
}

fn reject(policy: &BidPolicy, bid: &Candidate) -> Option<Rejection> {
    if bid.denom != policy.denom {
        return Some(Rejection::WrongDenom);
    }
    if policy.deny.contains(&bid.provider) {
        return Some(Rejection::Denied);
    }
    if !policy.allow.is_empty() && !policy.allow.contains(&bid.provider) {
        return Some(Rejection::NotAllowed);
    }
    if let Some(ceiling) = policy.max_price_per_block {
        if bid.price > ceiling {
            return Some(Rejection::TooExpensive);
        }
    }
    policy
        .required_attributes
        .iter()
        .find(|(key, wanted)| bid.attributes.get(*key) != Some(*wanted))
        .map(|(key, wanted)| Rejection::MissingAttribute {
            key: key.clone(),
            wanted: wanted.clone(),
            found: bid.attributes.get(key).cloned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid(provider: &str, price: &str, attributes: &[(&str, &str)]) -> Candidate {
        Candidate {
            provider: provider.into(),
            gseq: 1,
            oseq: 1,
            bseq: 0,
            price: price.parse().unwrap(),
            denom: "uakt".into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn chosen(decisions: &[BidDecision]) -> Option<&str> {
        let chosen: Vec<&str> = decisions
            .iter()
            .filter(|d| d.chosen())
            .map(|d| d.candidate.provider.as_str())
            .collect();
        assert!(chosen.len() <= 1, "more than one bid chosen: {chosen:?}");
        chosen.first().copied()
    }

    #[test]
    fn the_cheapest_acceptable_bid_wins_and_ties_go_to_the_lowest_address() {
        let policy = BidPolicy {
            denom: "uakt".into(),
            ..BidPolicy::default()
        };
        let bids = [
            bid("akash1c", "12", &[]),
            bid("akash1b", "9.5", &[]),
            bid("akash1a", "9.5", &[]),
        ];
        let decisions = choose_bid(&policy, &bids);
        assert_eq!(chosen(&decisions), Some("akash1a"));
        assert_eq!(decisions[0].rejection, Some(Rejection::Outbid));
        // Listing order does not matter.
        let reversed: Vec<Candidate> = bids.iter().rev().cloned().collect();
        assert_eq!(chosen(&choose_bid(&policy, &reversed)), Some("akash1a"));
    }

    #[test]
    fn each_rule_rejects_with_its_reason() {
        let mut policy = BidPolicy {
            max_price_per_block: Some("10".parse().unwrap()),
            denom: "uakt".into(),
            allow: vec![],
            deny: vec!["akash1bad".into()],
            required_attributes: [("gpu-model".to_string(), "rtx4090".to_string())].into(),
        };
        let gpu = [("gpu-model", "rtx4090")];
        let mut other_denom = bid("akash1ibc", "1", &gpu);
        other_denom.denom = "ibc/usdc".into();
        let table = [
            (other_denom, Some(Rejection::WrongDenom)),
            (bid("akash1bad", "1", &gpu), Some(Rejection::Denied)),
            (
                bid("akash1dear", "10.000000000000000001", &gpu),
                Some(Rejection::TooExpensive),
            ),
            (
                bid("akash1cpu", "1", &[]),
                Some(Rejection::MissingAttribute {
                    key: "gpu-model".into(),
                    wanted: "rtx4090".into(),
                    found: None,
                }),
            ),
            (
                bid("akash1h100", "1", &[("gpu-model", "h100")]),
                Some(Rejection::MissingAttribute {
                    key: "gpu-model".into(),
                    wanted: "rtx4090".into(),
                    found: Some("h100".into()),
                }),
            ),
            (bid("akash1good", "10", &gpu), None),
        ];
        let candidates: Vec<Candidate> = table.iter().map(|(c, _)| c.clone()).collect();
        let decisions = choose_bid(&policy, &candidates);
        for ((candidate, expected), decision) in table.iter().zip(&decisions) {
            assert_eq!(&decision.rejection, expected, "{}", candidate.provider);
        }
        assert!(decisions[4]
            .log_line(&policy)
            .contains("provider has gpu-model=h100"));
        assert!(decisions[5].log_line(&policy).contains("chosen"));
        assert!(decisions[2]
            .log_line(&policy)
            .contains("above the ceiling of 10uakt/block"));

        policy.allow = vec!["akash1other".into()];
        let decisions = choose_bid(&policy, &candidates);
        assert_eq!(decisions[5].rejection, Some(Rejection::NotAllowed));
        assert_eq!(chosen(&decisions), None);
    }

    #[test]
    fn no_bids_or_none_acceptable_choose_nothing() {
        let policy = BidPolicy {
            max_price_per_block: Some("1".parse().unwrap()),
            denom: "uakt".into(),
            ..BidPolicy::default()
        };
        assert!(choose_bid(&policy, &[]).is_empty());
        assert_eq!(
            chosen(&choose_bid(&policy, &[bid("akash1a", "2", &[])])),
            None
        );
    }

    #[test]
    fn policies_read_from_json_with_defaults_and_refuse_unknown_fields() {
        let policy: BidPolicy = serde_json::from_str(
            r#"{"max_price_per_block": "25.5", "required_attributes": {"region": "eu"}}"#,
        )
        .unwrap();
        assert_eq!(policy.denom, "uakt");
        assert_eq!(policy.max_price_per_block, Some("25.5".parse().unwrap()));
        assert!(serde_json::from_str::<BidPolicy>(r#"{"max_price": "1"}"#).is_err());
    }
}
