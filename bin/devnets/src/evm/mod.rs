//! The devnet EVM contracts (**test and demo stand-ins**, not the real Base contracts):
//! `MockUSDC` (a 6-decimal ERC-20 its deployer mints), `MorStakingVault` (records stakes,
//! emits `Staked`, pausable) and `SkipBridge` (the swap entry point of the route
//! simulator, [`crate::skip`]). Their Solidity sources are in `bin/devnets/contracts/`;
//! `scripts/contracts` compiles them with the pinned solc into
//! `bin/devnets/contracts/artifacts/`, embedded here.
//!
//! [`deploy`] puts all three on a node (anvil in the tests and demos) and returns their
//! addresses; [`mint`] funds accounts with USDC. `morpheus devnet contracts` is the same
//! from the command line.
//!
//! ```no_run
//! # async fn demo() -> Result<(), morpheus_devnets::evm::EvmError> {
//! use morpheus_devnets::evm::{deploy, mint, signer_from_hex, ANVIL_DEV_KEY};
//!
//! let deployer = signer_from_hex(ANVIL_DEV_KEY)?; // anvil's public account 0
//! let url = "http://127.0.0.1:8545".parse().unwrap();
//! let contracts = deploy(&url, deployer.clone()).await?;
//! let holder = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".parse().unwrap();
//! mint(&url, deployer, contracts.usdc, &[(holder, 100_000_000)]).await?;
//! # Ok(())
//! # }
//! ```

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolValue;
use serde::{Deserialize, Serialize};
use url::Url;

/// Re-exported so callers (the CLI, tests) name addresses and keys without depending
/// on alloy themselves.
pub use alloy::primitives::Address as EvmAddress;
pub use alloy::signers::local::PrivateKeySigner;

alloy::sol! {
    /// `MockUSDC` (`bin/devnets/contracts/MockUSDC.sol`): the calls and events used here.
    #[sol(rpc)]
    #[derive(Debug)]
    contract MockUSDC {
        event Transfer(address indexed from, address indexed to, uint256 value);
        event Approval(address indexed owner, address indexed spender, uint256 value);
        function name() external view returns (string);
        function symbol() external view returns (string);
        function decimals() external view returns (uint8);
        function owner() external view returns (address);
        function totalSupply() external view returns (uint256);
        function balanceOf(address account) external view returns (uint256);
        function allowance(address holder, address spender) external view returns (uint256);
        function mint(address to, uint256 amount) external;
        function transfer(address to, uint256 amount) external returns (bool);
        function approve(address spender, uint256 amount) external returns (bool);
        function transferFrom(address from, address to, uint256 amount) external returns (bool);
    }

    /// `MorStakingVault` (`bin/devnets/contracts/MorStakingVault.sol`).
    #[sol(rpc)]
    #[derive(Debug)]
    contract MorStakingVault {
        event Staked(address indexed staker, uint256 amount);
        event Paused(address account);
        event Unpaused(address account);
        function token() external view returns (address);
        function owner() external view returns (address);
        function paused() external view returns (bool);
        function stakedOf(address staker) external view returns (uint256);
        function totalStaked() external view returns (uint256);
        function stake(uint256 amount) external;
        function pause() external;
        function unpause() external;
    }

    /// `SkipBridge` (`bin/devnets/contracts/SkipBridge.sol`). `status` in `swaps` is
    /// 0 none, 1 pending, 2 settled, 3 refunded.
    #[sol(rpc)]
    #[derive(Debug)]
    contract SkipBridge {
        event SwapRequested(uint256 indexed id, address indexed sender, uint256 amountIn, string destAddress, uint256 minAmountOut);
        event SwapSettled(uint256 indexed id, uint256 amountOut);
        event SwapRefunded(uint256 indexed id, address indexed sender, uint256 amountIn, string reason);
        function token() external view returns (address);
        function owner() external view returns (address);
        function swapCount() external view returns (uint256);
        function swaps(uint256 id) external view returns (address sender, uint256 amountIn, string destAddress, uint256 minAmountOut, uint8 status, uint256 amountOut);
        function swap(uint256 amountIn, string destAddress, uint256 minAmountOut) external returns (uint256 id);
        function settle(uint256 id, uint256 amountOut) external;
        function refund(uint256 id, string reason) external;
    }
}

/// The private key of anvil's (and Hardhat's) first well-known dev account,
/// `0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266`. Public: anything it holds on a real
/// chain is anyone's. `morpheus devnet contracts` uses it only when the node reports
/// chain id [`ANVIL_CHAIN_ID`].
pub const ANVIL_DEV_KEY: &str =
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// anvil's default chain id.
pub const ANVIL_CHAIN_ID: u64 = 31337;

/// A compiled contract, as `scripts/contracts` writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// The contract's name (`MockUSDC`, …).
    pub contract_name: String,
    /// The compiler that produced it (`solc 0.8.37+commit…`).
    pub compiler: String,
    /// Its JSON ABI.
    pub abi: serde_json::Value,
    /// Creation bytecode, `0x…`.
    pub bytecode: String,
}

impl Artifact {
    /// The creation bytecode as bytes.
    pub fn creation_code(&self) -> Bytes {
        self.bytecode
            .parse()
            .expect("committed artifacts hold hex bytecode (scripts/contracts --check)")
    }
}

/// The embedded `MockUSDC` artifact.
pub fn mock_usdc_artifact() -> Artifact {
    parse_artifact(include_str!("../../contracts/artifacts/MockUSDC.json"))
}

/// The embedded `MorStakingVault` artifact.
pub fn staking_vault_artifact() -> Artifact {
    parse_artifact(include_str!(
        "../../contracts/artifacts/MorStakingVault.json"
    ))
}

/// The embedded `SkipBridge` artifact.
pub fn skip_bridge_artifact() -> Artifact {
    parse_artifact(include_str!("../../contracts/artifacts/SkipBridge.json"))
}

fn parse_artifact(text: &str) -> Artifact {
    serde_json::from_str(text).expect("committed artifacts are valid (scripts/contracts --check)")
}

/// What went wrong talking to the node.
#[derive(Debug)]
pub struct EvmError(pub String);

impl std::fmt::Display for EvmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EvmError {}

fn evm_error(context: &str) -> impl FnOnce(&dyn std::fmt::Display) -> EvmError + '_ {
    move |error| EvmError(format!("{context}: {error}"))
}

/// Parses a hex private key (with or without `0x`); the error never repeats the key.
pub fn signer_from_hex(text: &str) -> Result<PrivateKeySigner, EvmError> {
    text.trim()
        .parse()
        .map_err(|_| EvmError("the deployer key is not a 32-byte hex private key".to_owned()))
}

/// A provider that signs with `signer` and fills nonce, gas and fees from the node.
pub fn signing_provider(url: &Url, signer: PrivateKeySigner) -> DynProvider {
    ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url.clone())
        .erased()
}

/// The chain id the node at `url` reports (the CLI checks it before defaulting to
/// [`ANVIL_DEV_KEY`], which is only safe on anvil's chain [`ANVIL_CHAIN_ID`]).
pub async fn chain_id(url: &Url) -> Result<u64, EvmError> {
    ProviderBuilder::new()
        .connect_http(url.clone())
        .get_chain_id()
        .await
        .map_err(|e| evm_error(&format!("the EVM node at {url} does not answer"))(&e))
}

/// Addresses of the three deployed contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeployedContracts {
    /// The node's chain id.
    pub chain_id: u64,
    /// Who deployed them: `MockUSDC`'s minter, the vault's pauser, the bridge's
    /// settler (the route simulator must sign with this key).
    pub deployer: Address,
    /// `MockUSDC`.
    pub usdc: Address,
    /// `MorStakingVault`, staking `usdc`.
    pub staking_vault: Address,
    /// `SkipBridge`, taking `usdc`.
    pub bridge: Address,
}

/// Deploys `MockUSDC`, then `MorStakingVault(usdc)` and `SkipBridge(usdc)`, signed by
/// `deployer`, waiting for each receipt.
pub async fn deploy(url: &Url, deployer: PrivateKeySigner) -> Result<DeployedContracts, EvmError> {
    let deployer_address = deployer.address();
    let provider = signing_provider(url, deployer);
    let chain_id = provider
        .get_chain_id()
        .await
        .map_err(|e| evm_error("cannot read the node's chain id")(&e))?;
    let usdc = deploy_code(&provider, "MockUSDC", mock_usdc_artifact().creation_code()).await?;
    let with_token = |artifact: Artifact| -> Bytes {
        let mut code = artifact.creation_code().to_vec();
        code.extend_from_slice(&usdc.abi_encode());
        code.into()
    };
    let staking_vault = deploy_code(
        &provider,
        "MorStakingVault",
        with_token(staking_vault_artifact()),
    )
    .await?;
    let bridge = deploy_code(&provider, "SkipBridge", with_token(skip_bridge_artifact())).await?;
    Ok(DeployedContracts {
        chain_id,
        deployer: deployer_address,
        usdc,
        staking_vault,
        bridge,
    })
}

async fn deploy_code(provider: &DynProvider, name: &str, code: Bytes) -> Result<Address, EvmError> {
    let context = format!("deploying {name}");
    let request = TransactionRequest::default().with_deploy_code(code);
    let receipt = provider
        .send_transaction(request)
        .await
        .map_err(|e| evm_error(&context)(&e))?
        .get_receipt()
        .await
        .map_err(|e| evm_error(&context)(&e))?;
    if !receipt.status() {
        return Err(EvmError(format!(
            "{context}: the creation transaction reverted"
        )));
    }
    receipt
        .contract_address
        .ok_or_else(|| EvmError(format!("{context}: the receipt names no contract address")))
}

/// Mints `amount` USDC base units (6 decimals) to each account, signed by the token's
/// owner, one transaction after the other.
pub async fn mint(
    url: &Url,
    owner: PrivateKeySigner,
    usdc: Address,
    grants: &[(Address, u128)],
) -> Result<(), EvmError> {
    let provider = signing_provider(url, owner);
    let token = MockUSDC::new(usdc, &provider);
    for (to, amount) in grants {
        let context = format!("minting {amount} USDC base units to {to}");
        let receipt = token
            .mint(*to, U256::from(*amount))
            .send()
            .await
            .map_err(|e| evm_error(&context)(&e))?
            .get_receipt()
            .await
            .map_err(|e| evm_error(&context)(&e))?;
        if !receipt.status() {
            return Err(EvmError(format!("{context}: the transaction reverted")));
        }
    }
    Ok(())
}
