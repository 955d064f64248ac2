//! The `fund` workflow: a user's USDC on an EVM chain (Base) split between MOR staking
//! and AKT in an Akash deployment's escrow (swapped through a route API such as Skip
//! Go), every leg exactly once whatever crashes. See [`workflow`] for the steps and the
//! order of the legs, [`split()`] for the rounding.

pub(crate) mod evm_tx;
pub mod route;
mod split;
pub mod workflow;

pub use evm_tx::{ApprovalOutcome, LandedTx};
pub use split::{deposit_amount, parse_base_units, split, Split, MAX_AMOUNT};
pub use workflow::{
    DepositReport, Fund, FundConfig, FundInput, FundReport, LegStatus, StakeReport, SwapReport,
    AKT_DENOM,
};
