//! `morpheus devnet …`: local stand-ins for the chains the flows talk to. Each one is a
//! simulator (no real node can be installed here) and says so wherever it appears. The
//! simulators live in the `morpheus-devnets` crate; this module only turns the command
//! line into their options and runs them until a signal.

use std::time::Duration;

use anyhow::{Context, Result};
use morpheus_devnets::akash;
use morpheus_devnets::evm::{self, PrivateKeySigner};
use morpheus_devnets::provider;
use morpheus_devnets::skip::{self, quote};
use tokio::net::TcpListener;

use crate::cli::{
    DevnetAkashArgs, DevnetCommand, DevnetContractsArgs, DevnetEvmKeyArgs, DevnetProviderArgs,
    DevnetSkipArgs, DEVNET_EVM_KEY_ENV, DEVNET_PROVIDER_MNEMONIC_ENV,
};

/// Runs a devnet command until SIGTERM or Ctrl-C.
pub async fn run(command: DevnetCommand) -> Result<()> {
    match command {
        DevnetCommand::Akash(args) => run_akash(args).await,
        DevnetCommand::Skip(args) => run_skip(*args).await,
        DevnetCommand::Contracts(args) => run_contracts(*args).await,
        DevnetCommand::Provider(args) => run_provider(*args).await,
    }
}

/// The devnet EVM key: `--key-file`, else `$MORPHEUS_DEVNET_EVM_KEY`, else anvil's
/// public account 0 key, which is only allowed on anvil's chain id (anywhere else it
/// would be a key everyone knows).
async fn evm_key(args: &DevnetEvmKeyArgs, rpc: &url::Url) -> Result<PrivateKeySigner> {
    if let Some(path) = &args.key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --key-file {}", path.display()))?;
        return Ok(evm::signer_from_hex(&text)?);
    }
    if let Ok(text) = std::env::var(DEVNET_EVM_KEY_ENV) {
        return Ok(evm::signer_from_hex(&text)?);
    }
    let chain_id = evm::chain_id(rpc).await?;
    if chain_id != evm::ANVIL_CHAIN_ID {
        anyhow::bail!(
            "the node reports chain id {chain_id}, not anvil's {}: give the key with --key-file or ${DEVNET_EVM_KEY_ENV}",
            evm::ANVIL_CHAIN_ID
        );
    }
    Ok(evm::signer_from_hex(evm::ANVIL_DEV_KEY)?)
}

fn parse_address(text: &str, flag: &str) -> Result<evm::EvmAddress> {
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag} '{text}' is not a 0x-prefixed 20-byte address"))
}

/// `ADDR=AMOUNT` (base units) from `--mint`.
fn parse_mint(text: &str) -> Result<(evm::EvmAddress, u128)> {
    let (address, amount) = text
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--mint '{text}' is not ADDR=AMOUNT"))?;
    let amount: u128 = amount.trim().parse().map_err(|_| {
        anyhow::anyhow!("--mint '{text}': AMOUNT must be a whole number of USDC base units")
    })?;
    Ok((parse_address(address, "--mint")?, amount))
}

async fn run_contracts(args: DevnetContractsArgs) -> Result<()> {
    // Every --mint is checked before anything is deployed: bad input changes nothing.
    let grants = args
        .mint
        .iter()
        .map(|text| parse_mint(text))
        .collect::<Result<Vec<_>>>()?;
    let deployer = evm_key(&args.key, &args.evm_rpc).await?;
    let contracts = evm::deploy(&args.evm_rpc, deployer.clone()).await?;
    evm::mint(&args.evm_rpc, deployer, contracts.usdc, &grants).await?;
    println!("{}", serde_json::to_string_pretty(&contracts)?);
    Ok(())
}

async fn run_skip(args: DevnetSkipArgs) -> Result<()> {
    let pricing = quote::Pricing {
        price: quote::Decimal::parse(&args.price, "--price").map_err(anyhow::Error::msg)?,
        fee_bps: args.fee_bps,
        price_impact_pct: quote::Decimal::parse(&args.price_impact_pct, "--price-impact-pct")
            .map_err(anyhow::Error::msg)?,
    };
    pricing.validate().map_err(anyhow::Error::msg)?;
    let bridge = parse_address(&args.bridge, "--bridge")?;
    let usdc = args
        .usdc
        .as_deref()
        .map(|text| parse_address(text, "--usdc"))
        .transpose()?;
    let owner_key = evm_key(&args.key, &args.evm_rpc).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let simulator = skip::serve(
        listener,
        skip::SkipOptions {
            evm_rpc: args.evm_rpc,
            akash_rest: args.akash_rest,
            bridge,
            usdc,
            owner_key,
            pricing,
            poll_interval: Duration::from_millis(args.poll_interval_ms),
        },
    )
    .await?;
    tracing::info!(url = %simulator.url(), "skip go route simulator started");
    print!("{}", simulator.banner());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    shutdown_signal().await;
    simulator.shutdown().await;
    Ok(())
}

async fn run_akash(args: DevnetAkashArgs) -> Result<()> {
    let options = akash::SimulatorOptions {
        chain_id: args.chain_id,
        block_time: Duration::from_millis(args.block_time_ms),
        seed_demo: args.seed_demo,
        ..akash::SimulatorOptions::default()
    };
    if options.chain_id.trim().is_empty() {
        anyhow::bail!("--chain-id must not be empty");
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let simulator = akash::serve(listener, options).await?;
    tracing::info!(
        url = %simulator.url(),
        chain_id = %simulator.options().chain_id,
        demo_wallet = simulator.demo().map(|demo| demo.address.as_str()),
        "akash devnet simulator started"
    );
    // The banner goes to stdout in one write, so a process reading it line by line
    // (a test, a script waiting for the port) sees it whole.
    print!("{}", simulator.banner());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    shutdown_signal().await;
    simulator.shutdown().await;
    Ok(())
}

/// `KEY=VALUE` from `--attribute`.
fn parse_attribute(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() && !value.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => anyhow::bail!("--attribute '{text}' is not KEY=VALUE"),
    }
}

async fn run_provider(args: DevnetProviderArgs) -> Result<()> {
    let attributes = args
        .attributes
        .iter()
        .map(|text| parse_attribute(text))
        .collect::<Result<Vec<_>>>()?;
    quote::Decimal::parse(&args.price, "--price").map_err(anyhow::Error::msg)?;
    let mnemonic = match &args.mnemonic_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --mnemonic-file {}", path.display()))?,
        ),
        None => std::env::var(DEVNET_PROVIDER_MNEMONIC_ENV).ok(),
    };
    let mut options = provider::ProviderOptions::new(args.akash_rest);
    options.attributes = attributes;
    options.price_uakt_per_block = args.price;
    options.bid_delay_blocks = args.bid_delay_blocks;
    options.mnemonic = mnemonic;
    options.host_uri = args.host_uri;
    options.poll_interval = Duration::from_millis(args.poll_interval_ms);
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let simulator = provider::start_provider(listener, options).await?;
    tracing::info!(
        url = %simulator.url(),
        provider = %simulator.address(),
        "akash provider simulator started"
    );
    print!("{}", simulator.banner());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    shutdown_signal().await;
    simulator.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
