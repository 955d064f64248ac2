//! `morpheus keys ephemeral create | list | revoke`: the ephemeral keys automation signs
//! with. Creating and revoking are runs (`keys.ephemeral.create`, `.revoke`) executed in
//! this process on the queue [`KEYS_QUEUE`] by a worker whose `cosmos` executor holds
//! the granter's key, so a crash resumes them exactly once; the key material never
//! leaves the document store sealed.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use morpheus_engine::{DocumentQuery, Documents, Engine, RunStatus, Runtime, WorkerConfig, World};
use morpheus_executors::audit::SignatureAudit;
use morpheus_executors::cosmos::ephemeral::{
    EphemeralRecord, EphemeralStatus, PassphraseSource, EPHEMERAL_KEYS_COLLECTION,
};
use morpheus_executors::cosmos::{Coin, CosmosExecutor, CosmosRequest, DepositGrantInfo};
use morpheus_executors::key_source::KeySource;
use serde_json::{json, Value};

use crate::akash_deploy::follow_run;
use crate::cli::{
    EphemeralCommand, EphemeralCreateArgs, EphemeralListArgs, EphemeralRevokeArgs, GranterArgs,
};
use crate::commands::{default_registries, open};
use crate::config::Config;

/// The queue the key runs go to: the in-process worker serves only it.
pub const KEYS_QUEUE: &str = "keys";

/// Runs one `keys ephemeral` command.
pub async fn run(url: &str, command: EphemeralCommand, config: &Config) -> Result<()> {
    match command {
        EphemeralCommand::Create(args) => create(url, args, config).await,
        EphemeralCommand::List(args) => list(url, args, config).await,
        EphemeralCommand::Revoke(args) => revoke(url, args, config).await,
    }
}

/// `mnemonic-env:NAME` and friends → a [`KeySource`].
pub fn parse_key_reference(text: &str) -> Result<KeySource> {
    let (kind, place) = text.split_once(':').ok_or_else(|| {
        anyhow!("--granter: '{text}' is not a key reference (mnemonic-env:NAME, mnemonic-file:PATH, hex-env:NAME or hex-file:PATH)")
    })?;
    if place.is_empty() {
        bail!("--granter: '{text}' names no variable or file");
    }
    Ok(match kind {
        "mnemonic-env" => KeySource::MnemonicEnv(place.to_owned()),
        "mnemonic-file" => KeySource::MnemonicFile(place.into()),
        "hex-env" => KeySource::HexKeyEnv(place.to_owned()),
        "hex-file" => KeySource::HexKeyFile(place.into()),
        other => {
            bail!("--granter: '{other}' is not mnemonic-env, mnemonic-file, hex-env or hex-file")
        }
    })
}

/// The passphrase reference: the flags, else `[cosmos.ephemeral] passphrase`, else
/// `$MORPHEUS_KEYS_PASSPHRASE`. Checked readable before anything starts.
fn passphrase(args: &GranterArgs, config: &Config) -> Result<PassphraseSource> {
    let source = match (&args.passphrase_env, &args.passphrase_file) {
        (Some(name), _) => PassphraseSource::Env(name.clone()),
        (_, Some(path)) => PassphraseSource::File(path.clone()),
        _ => config
            .cosmos
            .as_ref()
            .and_then(|cosmos| cosmos.ephemeral.as_ref())
            .map(|ephemeral| ephemeral.passphrase.clone())
            .unwrap_or_default(),
    };
    source.read().map_err(|error| anyhow!("{error}"))?;
    Ok(source)
}

/// The `cosmos` executor signing as the granter.
fn granter_executor(args: &GranterArgs, config: &Config) -> Result<CosmosExecutor> {
    let mut cosmos = config.cosmos.clone().ok_or_else(|| {
        anyhow!("morpheus.toml has no [cosmos] section (rest_url, chain_id): ephemeral keys need the chain")
    })?;
    if let Some(reference) = &args.granter {
        cosmos.key = Some(parse_key_reference(reference)?);
    }
    if cosmos.key.is_none() {
        bail!("--granter is required: [cosmos] has no key");
    }
    // The granter signs with its own key here, whatever `up` is set to sign with.
    cosmos.ephemeral = None;
    CosmosExecutor::new(&cosmos).map_err(|error| anyhow!("--granter: {error}"))
}

/// Starts `workflow` with `input` on [`KEYS_QUEUE`] and executes it in this process,
/// following its logs to stderr; returns its output.
async fn run_here(
    url: &str,
    workflow: &str,
    input: Value,
    idempotency_key: Option<String>,
    args: &GranterArgs,
    config: &Config,
) -> Result<Value> {
    let passphrase = passphrase(args, config)?;
    let executor = granter_executor(args, config)?;
    let granter = executor
        .address()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("--granter: no key"))?;
    let key_id = args
        .granter
        .clone()
        .or_else(|| {
            config
                .cosmos
                .as_ref()
                .and_then(|cosmos| cosmos.key.as_ref())
                .map(ToString::to_string)
        })
        .unwrap_or_default();
    let (mut workflows, mut executors) = default_registries();
    morpheus_workflows::keys::register_commands(&mut workflows, passphrase);
    let mut input = input;
    if workflow == "keys.ephemeral.create" {
        input["granter"] = json!(granter);
    }
    // Checked before the database is touched: bad input changes nothing.
    let mut new_run = workflows.prepare(workflow, input, idempotency_key)?;
    new_run.queue = KEYS_QUEUE.to_owned();
    let world: Arc<dyn World> = open(url).await?;
    executors.register(executor.with_signature_audit(SignatureAudit::new(world.clone(), key_id)));
    let engine = Engine::new(world.clone(), workflows, executors);
    let started = engine.start_prepared(new_run).await?;
    let mut worker = WorkerConfig::for_backend(world.backend());
    worker.queues = Some(vec![KEYS_QUEUE.to_owned()]);
    worker.poll_interval = std::time::Duration::from_millis(200);
    // A one-off worker: if this process dies, the next `keys ephemeral` command (same
    // idempotency key) takes the run over within seconds.
    worker.lease_ttl = std::time::Duration::from_secs(5);
    worker.heartbeat_interval = std::time::Duration::from_secs(1);
    let runtime = Runtime::new(engine)
        .worker_config(worker)
        .without_scheduler()
        .spawn();
    let finished = follow_run(&world, started.run_id, args.timeout, workflow).await;
    runtime.shutdown().await?;
    let run = finished?;
    if run.status != RunStatus::Completed {
        bail!(
            "{workflow} run {} {}: {}",
            started.run_id,
            run.status,
            run.error.unwrap_or_default()
        );
    }
    run.output
        .ok_or_else(|| anyhow!("{workflow} run {} has no output", started.run_id))
}

async fn create(url: &str, args: EphemeralCreateArgs, config: &Config) -> Result<()> {
    let ttl_s = args.ttl.as_secs();
    if args.ttl.subsec_nanos() != 0 {
        bail!("--ttl: whole seconds only");
    }
    let input = json!({
        "granter": "",
        "ttl_s": ttl_s,
        "spend_limit": args.spend_limit,
        "fee_limit": args.fee_limit,
        "seconds_per_block": args.granter.seconds_per_block,
    });
    // The terms are checked before the granter's key is even read.
    let (mut workflows, _) = default_registries();
    morpheus_workflows::keys::register_commands(&mut workflows, PassphraseSource::default());
    let mut probe = input.clone();
    probe["granter"] = json!("akash1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq");
    workflows.prepare("keys.ephemeral.create", probe, None)?;
    let output = run_here(
        url,
        "keys.ephemeral.create",
        input,
        args.idempotency_key,
        &args.granter,
        config,
    )
    .await?;
    if args.granter.json {
        println!("{output}");
    } else {
        println!(
            "{}  {}  expires {}  (granted by {} in tx {})",
            output["id"].as_str().unwrap_or(""),
            output["address"].as_str().unwrap_or(""),
            output["expires_at"].as_str().unwrap_or(""),
            output["granter"].as_str().unwrap_or(""),
            output["grant_tx"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

async fn revoke(url: &str, args: EphemeralRevokeArgs, config: &Config) -> Result<()> {
    let world = open(url).await?;
    let record = Documents::new(world)
        .get::<EphemeralRecord>(EPHEMERAL_KEYS_COLLECTION, &args.id)
        .await?
        .ok_or_else(|| {
            anyhow!(
                "ephemeral key {} is unknown (`morpheus keys ephemeral list` shows the keys)",
                args.id
            )
        })?
        .value;
    let input = json!({"id": args.id, "seconds_per_block": args.granter.seconds_per_block});
    let output = run_here(
        url,
        "keys.ephemeral.revoke",
        input,
        Some(format!("revoke:{}", record.id)),
        &args.granter,
        config,
    )
    .await?;
    if args.granter.json {
        println!("{output}");
    } else {
        match output["revoke_tx"].as_str() {
            Some(tx) => println!("{}: grants revoked in tx {tx}; key destroyed", record.id),
            None => println!("{}: no live grant on chain; key destroyed", record.id),
        }
    }
    Ok(())
}

async fn list(url: &str, args: EphemeralListArgs, config: &Config) -> Result<()> {
    let world = open(url).await?;
    let mut query = DocumentQuery::new(EPHEMERAL_KEYS_COLLECTION).limit(1_000);
    if let Some(granter) = &args.granter {
        query = query.field_equals("granter", granter.as_str());
    }
    let keys = Documents::new(world)
        .list::<EphemeralRecord>(&query)
        .await?;
    let chain = match (&config.cosmos, args.offline) {
        (Some(cosmos), false) => {
            let mut cosmos = cosmos.clone();
            cosmos.key = None;
            cosmos.ephemeral = None;
            Some(
                CosmosExecutor::new(&cosmos)
                    .map_err(|error| anyhow!("config [cosmos]: {error}"))?,
            )
        }
        _ => None,
    };
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    for key in keys {
        let record = key.value;
        let live = record.status == EphemeralStatus::Active && record.expires_at > now;
        let spent = match (&chain, live) {
            (Some(executor), true) => Some(spent(executor, &record).await?),
            _ => None,
        };
        let status = if record.status == EphemeralStatus::Active && !live {
            "expired".to_owned()
        } else {
            record.status.to_string()
        };
        rows.push(json!({
            "id": record.id,
            "address": record.address,
            "granter": record.granter,
            "status": status,
            "expires_at": record.expires_at,
            "spend_limit": record.spend_limit,
            "spent": spent,
            "fee_limit": record.fee_limit,
            "grants": record.grants,
            "grant_tx": record.grant_tx,
            "revoke_tx": record.revoke_tx,
            "created_at": record.created_at,
        }));
    }
    if args.json {
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "no ephemeral keys (create one with `morpheus keys ephemeral create --granter …`)"
        );
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:<21} {:<16} {:<16} {:<45} GRANTS",
        "ID", "STATUS", "EXPIRES", "SPEND LIMIT", "SPENT", "ADDRESS"
    );
    for row in rows {
        let expires = row["expires_at"]
            .as_str()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.format("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_default();
        let grants: Vec<&str> = row["grants"]
            .as_array()
            .map(|grants| {
                grants
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|t| t.rsplit('.').next().unwrap_or(t))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<20} {:<8} {:<21} {:<16} {:<16} {:<45} {}",
            row["id"].as_str().unwrap_or(""),
            row["status"].as_str().unwrap_or(""),
            expires,
            row["spend_limit"].as_str().unwrap_or(""),
            row["spent"].as_str().unwrap_or("-"),
            row["address"].as_str().unwrap_or(""),
            grants.join(",")
        );
    }
    Ok(())
}

/// How much of `record`'s spend limit was deposited, from what the chain says is left.
async fn spent(executor: &CosmosExecutor, record: &EphemeralRecord) -> Result<String> {
    let answer = crate::akash_deploy::read(
        executor,
        CosmosRequest::DepositGrant {
            granter: record.granter.clone(),
            grantee: record.address.clone(),
        },
    )
    .await?;
    let grant: DepositGrantInfo =
        serde_json::from_value(answer).context("the deposit grant answer")?;
    let limit: Coin = record
        .spend_limit
        .parse()
        .map_err(|error| anyhow!("stored spend limit: {error}"))?;
    Ok(match grant.spend_limit_left {
        Some(left) => {
            let left: Coin = left
                .parse()
                .map_err(|error| anyhow!("the chain's spend limit: {error}"))?;
            format!(
                "{}{}",
                limit.amount.saturating_sub(left.amount),
                limit.denom
            )
        }
        None if grant.found => "?".to_owned(),
        None => "(no grant)".to_owned(),
    })
}
