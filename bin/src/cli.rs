//! Command-line grammar.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The default database: an embedded SQLite file, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./.morpheus/morpheus.db";

/// Morpheus: a durable workflow engine. Runs resume after any crash from their last
/// completed step; step results are recorded exactly once.
#[derive(Debug, Parser)]
#[command(name = "morpheus", version, propagate_version = true)]
pub struct Cli {
    /// Database URL: sqlite://PATH (embedded, default) or postgres://USER:PASS@HOST/DB.
    #[arg(long, global = true, env = "MORPHEUS_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Configuration file (default: ./morpheus.toml when it exists).
    #[arg(long, global = true, env = "MORPHEUS_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run workers until stopped (SIGTERM or Ctrl-C stops gracefully); with --listen
    /// (or `[api] listen`), serve the HTTP API and dashboard beside them.
    Up(UpArgs),
    /// Serve the HTTP API and dashboard alone, without workers (scale it apart from the
    /// workers on Postgres).
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Start a run of a workflow and print its id.
    Start(StartArgs),
    /// Inspect and operate runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Show a run's logs.
    Logs(LogsArgs),
    /// Cron and interval schedules that start runs.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Automations: an external executor triggered on an interval, its answers verified
    /// (HMAC-SHA256), the transactions it asks for relayed exactly once from the
    /// automation's own relayers, every execution logged. `morpheus up` runs them.
    #[command(subcommand)]
    Automations(AutomationsCommand),
    /// Configure and inspect queues.
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Executors out of process (`[[extensions]]`): list them with what the workers
    /// report, inspect one, or call one directly to try it out.
    #[command(subcommand)]
    Extensions(ExtensionsCommand),
    /// Deliver an event to runs waiting for it (`ctx.wait_for_event`).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Delete finished runs (with their steps and logs) older than a cutoff, in bounded
    /// batches. Running and parked runs are never touched.
    Prune(PruneArgs),
    /// Measure throughput and step latency on a fresh set of no-op runs.
    Bench(BenchArgs),
    /// Without a subcommand, deploy the project in ./morpheus.yaml to Akash (build, push,
    /// deployment, bids, lease, manifest) and follow the run to its URI; with --dry-run,
    /// only show the SDL and the plan. The subcommands deploy directories into fresh
    /// Docker sandboxes (specs, runs, snapshots, gc).
    Deploy(DeployArgs),
    /// Run a local chain simulator (for demos and tests; not a real chain).
    #[command(subcommand)]
    Devnet(DevnetCommand),
    /// Write a commented morpheus.yaml for a template (the Akash deploy's project file;
    /// `morpheus deploy --dry-run` shows what it synthesizes).
    Init(InitArgs),
    /// Fund a deployment from USDC: stake a share on MOR, swap the rest to AKT and
    /// deposit it into the deployment's escrow (the `fund` workflow; needs [evm],
    /// [cosmos] and [fund] in morpheus.toml for the `morpheus up` that runs it).
    Fund(FundArgs),
    /// Close the project's Akash deployment (`akash.close`: MsgCloseDeployment exactly
    /// once; the provider stops its containers, the escrow's rest comes back).
    Close(CloseArgs),
    /// The project's Akash deployment: lease and services as the provider reports
    /// them, escrow balance and predicted runway.
    Status(StatusArgs),
    /// Sealed secrets (`sealed:v1:…`) for deploy spec env values: seal a value to a
    /// public key, make a key pair, or open a value to test a key.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// The keys flows sign with: `keys audit` lists every signature an executor made.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `morpheus automations …`.
#[derive(Debug, Subcommand)]
pub enum AutomationsCommand {
    /// Register an automation and print its id, HMAC key (shown once) and relayer
    /// addresses. The configuration (JSON, `@file` or `@-` for stdin):
    /// `{"source": {"type": "INTERVAL", "value": <seconds>}, "destination": {"baseURL":
    /// "https://…"}, "verifyPayload": true, "relayerCount": 1, "policy":
    /// {"allowedTargets": ["0x…"], "maxValue": "0"}}`. baseURL must be https (http only
    /// on a loopback host); intervals are in seconds, at least `[automations]
    /// min_interval_s` (1). Fund the relayers with gas before the first execution.
    Add {
        /// The configuration: JSON, `@file`, or `@-` for stdin.
        #[arg(value_name = "CONFIG")]
        definition: String,
    },
    /// Every automation: id, status, trigger, destination, relayers.
    List {
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Stop triggering it (an execution under way finishes).
    Pause {
        /// The automation's id.
        id: String,
    },
    /// Trigger it again from the next tick.
    Resume {
        /// The automation's id.
        id: String,
    },
    /// Deregister its trigger, destroy its relayer keys and delete it (its logs stay).
    Delete {
        /// The automation's id.
        id: String,
    },
    /// Its execution log records, newest first.
    Logs {
        /// The automation's id.
        id: String,
        /// Skip this many of the newest.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// At most this many.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// `morpheus keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Every transaction the `cosmos` and `evm` executors of `morpheus up` signed,
    /// newest first: time, chain, key (its reference, never the key), address, what was
    /// signed, run and step, transaction hash. Recorded before the signed bytes leave
    /// the executor.
    Audit(KeysAuditArgs),
    /// Ephemeral keys: short-lived keys that hold AuthZ grants from an owner for exactly
    /// the deployment messages and escrow deposits (with a spend limit), fees paid by
    /// the owner's fee allowance. `[cosmos] ephemeral = { granter = "akash1…" }` makes
    /// `morpheus up` sign with them instead of the owner's key.
    #[command(subcommand)]
    Ephemeral(EphemeralCommand),
}

/// `morpheus keys ephemeral …`.
#[derive(Debug, Subcommand)]
pub enum EphemeralCommand {
    /// Generate a key, store it sealed (age, scrypt; the passphrase by reference) and
    /// grant it from the granter in one transaction: create / update / close
    /// deployment, escrow deposits up to --spend-limit, fees up to --fee-limit, all
    /// expiring after --ttl. Runs as a `keys.ephemeral.create` run in this process (a
    /// crash resumes it: one key stored, one grant on chain) and prints the key's id.
    Create(EphemeralCreateArgs),
    /// The stored ephemeral keys, newest first: id, address, granter, status, expiry,
    /// spend limit and (with [cosmos]) how much of it was spent, as the chain says.
    List(EphemeralListArgs),
    /// Revoke every grant of a key on chain (skipped when they already expired), then
    /// destroy its key material. Runs as a `keys.ephemeral.revoke` run in this process.
    Revoke(EphemeralRevokeArgs),
}

/// Where the granter's key and the keys' passphrase are, for the ephemeral commands
/// that sign.
#[derive(Debug, Args)]
pub struct GranterArgs {
    /// The granter's key, by reference: `mnemonic-env:NAME`, `mnemonic-file:PATH`,
    /// `hex-env:NAME` or `hex-file:PATH` (default: `[cosmos] key`).
    #[arg(long)]
    pub granter: Option<String>,
    /// The environment variable holding the passphrase the keys are sealed with
    /// (default: `[cosmos.ephemeral] passphrase`, else $MORPHEUS_KEYS_PASSPHRASE).
    #[arg(long, conflicts_with = "passphrase_file")]
    pub passphrase_env: Option<String>,
    /// A file holding that passphrase instead.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Seconds per block of the chain (how long a competing transaction needs).
    #[arg(long, default_value_t = 6.0)]
    pub seconds_per_block: f64,
    /// Give up waiting for the run after this long (it goes on; `morpheus logs <run>`).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Print the result as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `morpheus keys ephemeral create`.
#[derive(Debug, Args)]
pub struct EphemeralCreateArgs {
    #[command(flatten)]
    pub granter: GranterArgs,
    /// How long the key and its grants live (10s ..= 30 days).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// The most the key may deposit into escrow, in total.
    #[arg(long, default_value = "20000000uakt")]
    pub spend_limit: String,
    /// The most of the granter's funds the key may spend on fees, in total.
    #[arg(long, default_value = "5000000uakt")]
    pub fee_limit: String,
    /// Idempotency key: the same key returns the same run (and the same key).
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `morpheus keys ephemeral list`.
#[derive(Debug, Args)]
pub struct EphemeralListArgs {
    /// Only the keys of this granter.
    #[arg(long)]
    pub granter: Option<String>,
    /// Do not ask the chain how much of each spend limit is left.
    #[arg(long)]
    pub offline: bool,
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `morpheus keys ephemeral revoke`.
#[derive(Debug, Args)]
pub struct EphemeralRevokeArgs {
    /// The key's id (`eph-…`, as `keys ephemeral list` shows).
    pub id: String,
    #[command(flatten)]
    pub granter: GranterArgs,
}

/// `morpheus keys audit`.
#[derive(Debug, Args)]
pub struct KeysAuditArgs {
    /// Only this key: its reference as listed (`mnemonic in $AKASH_MNEMONIC`) or its
    /// address.
    #[arg(long)]
    pub key: Option<String>,
    /// Only signatures since this time: RFC 3339 (2026-11-23T10:00:00Z) or an age (10m,
    /// 2h).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `morpheus secrets …`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Seal a value (read from stdin, one trailing newline dropped, or --value) and
    /// print `sealed:v1:<base64>`: ECIES on secp256k1 as the `ecies` crate and eciesjs
    /// write it. The key: --public-key, or a secret key's reference (its public key is
    /// derived), or else `[secrets] key` of morpheus.toml.
    Seal(SealArgs),
    /// Open a sealed value (from stdin or --value) and PRINT ITS PLAINTEXT to stdout.
    /// For operators testing a key; deploys open values themselves.
    Open(OpenArgs),
    /// Make a new key pair: the secret key (64 hex digits) goes to a new file --out
    /// (mode 0600), the public key (66 hex digits, compressed) to stdout.
    Keygen {
        /// Where to write the secret key; an existing file is not overwritten.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
}

/// Where `secrets seal` gets its key: one of these, or morpheus.toml's.
#[derive(Debug, Args)]
#[group(id = "seal_key", multiple = false)]
pub struct SealKeyArgs {
    /// The public key to seal to, hex (compressed or uncompressed).
    #[arg(long, value_name = "HEX")]
    pub public_key: Option<String>,
    /// A secret key (hex) in this environment variable; its public key is used.
    #[arg(long, value_name = "VAR")]
    pub key_env: Option<String>,
    /// A secret key (hex) in this file; its public key is used.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// `morpheus secrets seal`.
#[derive(Debug, Args)]
pub struct SealArgs {
    /// The key (default: `[secrets] key` of morpheus.toml).
    #[command(flatten)]
    pub key: SealKeyArgs,
    /// The value to seal (default: stdin, which keeps it out of shell history and `ps`).
    #[arg(long)]
    pub value: Option<String>,
}

/// `morpheus secrets open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// The secret key (hex) is in this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "key_file")]
    pub key_env: Option<String>,
    /// The secret key (hex) is in this file.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// The sealed value (default: stdin).
    #[arg(long)]
    pub value: Option<String>,
}

/// `morpheus init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The template: ai-agent (2 CPU, 4Gi, one RTX 4090), mcp-server (0.5 CPU, 512Mi),
    /// website (0.5 CPU, 256Mi) or custom.
    #[arg(long, default_value = "custom")]
    pub template: String,
    /// The project's name (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Where to write morpheus.yaml (default: the current directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Replace an existing morpheus.yaml.
    #[arg(long)]
    pub force: bool,
}

/// `morpheus deploy --dry-run`.
#[derive(Debug, Args)]
pub struct DeployDryRunArgs {
    /// The project directory holding morpheus.yaml (default: the current directory).
    #[arg(long)]
    pub project_dir: Option<PathBuf>,
    /// Print one JSON document: `sdl` (YAML text), `manifest_version` (hex), `groups`,
    /// `image`, `manifest_sorted_json`.
    #[arg(long)]
    pub json: bool,
}

/// `morpheus deploy` (the Akash deploy of ./morpheus.yaml): starts an `akash.deploy`
/// run that a `morpheus up` with `[cosmos]` executes, and follows it.
#[derive(Debug, Args)]
pub struct AkashDeployArgs {
    /// The deployment's owner (default: the address of the [cosmos] key, which must
    /// be the owner's: it signs every message of the deployment).
    #[arg(long, value_name = "AKASH_ADDRESS")]
    pub owner: Option<String>,
    /// The first escrow deposit (`5000000uakt`, or a number of uakt).
    #[arg(long, default_value = "5000000uakt")]
    pub deposit: String,
    /// The highest acceptable bid, in uakt per block (a decimal).
    #[arg(long, value_name = "UAKT")]
    pub max_price: Option<String>,
    /// Only bids of this provider (repeat for several; default: any).
    #[arg(long = "allow-provider", value_name = "ADDRESS")]
    pub allow_providers: Vec<String>,
    /// Never bids of this provider (repeat for several).
    #[arg(long = "deny-provider", value_name = "ADDRESS")]
    pub deny_providers: Vec<String>,
    /// Only providers with this attribute (repeat for several: `region=eu`,
    /// `gpu-model=rtx4090`).
    #[arg(long = "require-attribute", value_name = "KEY=VALUE")]
    pub required_attributes: Vec<String>,
    /// Collect bids this long after the deployment is created before choosing.
    #[arg(long, default_value = "18s", value_parser = humantime::parse_duration)]
    pub bid_window: std::time::Duration,
    /// No acceptable bid this long after creation: close the deployment and fail.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub bid_timeout: std::time::Duration,
    /// Services not ready this long after the manifest is accepted: close and fail.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub ready_timeout: std::time::Duration,
    /// The chain's block time in seconds (Akash: about 6); bids and the lease status
    /// are polled once per block.
    #[arg(long, default_value_t = 6.0)]
    pub seconds_per_block: f64,
    /// Print the run id and return instead of following the run.
    #[arg(long)]
    pub no_wait: bool,
    /// Stop following (the run goes on) after this long.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Start at most one run for this key (a retried command follows the first run).
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `morpheus close`.
#[derive(Debug, Args)]
pub struct CloseArgs {
    /// The deployment (default: the one the newest `morpheus deploy` of the project
    /// in --project-dir created).
    pub dseq: Option<String>,
    /// The project directory holding morpheus.yaml (default: the current directory).
    #[arg(long)]
    pub project_dir: Option<PathBuf>,
    /// The deployment's owner (default: the address of the [cosmos] key).
    #[arg(long, value_name = "AKASH_ADDRESS")]
    pub owner: Option<String>,
    /// The chain's block time in seconds.
    #[arg(long, default_value_t = 6.0)]
    pub seconds_per_block: f64,
    /// Print the run id and return instead of following the run.
    #[arg(long)]
    pub no_wait: bool,
    /// Stop following (the run goes on) after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Print JSON (the run id, or the report).
    #[arg(long)]
    pub json: bool,
}

/// `morpheus status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The deployment (default: the one the newest `morpheus deploy` of the project
    /// in --project-dir created).
    pub dseq: Option<String>,
    /// The project directory holding morpheus.yaml (default: the current directory).
    #[arg(long)]
    pub project_dir: Option<PathBuf>,
    /// The chain's block time in seconds (for the runway).
    #[arg(long, default_value_t = 6.0)]
    pub seconds_per_block: f64,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `morpheus fund`.
#[derive(Debug, Args)]
pub struct FundArgs {
    /// USDC to spend, in whole USDC with up to 6 decimals (100, 12.5).
    #[arg(long, value_name = "USDC")]
    pub usdc: String,
    /// The deployment whose escrow receives the AKT.
    #[arg(long)]
    pub dseq: String,
    /// The deployment's owner (default: the address of the [cosmos] key).
    #[arg(long, value_name = "AKASH_ADDRESS")]
    pub owner: Option<String>,
    /// Percent of the USDC staked on MOR (0–100); the rest is swapped to AKT.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub stake_share: u8,
    /// Most the swap may deliver below its quote, in percent.
    #[arg(long, default_value_t = 1.0)]
    pub slippage: f64,
    /// Check balances and quote the route, but send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for the run to end, showing its logs, and print the report per leg.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop waiting (the run goes on) after this long.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Start at most one run for this key (a retried command finds the first run).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Print JSON (the run id, or with --wait the report).
    #[arg(long)]
    pub json: bool,
}

/// `morpheus up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Most runs executing at once in this process.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Lease length; a run whose worker died is taken over after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,
    /// How often held leases are renewed (must be under --lease-ttl).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat: std::time::Duration,
    /// Longest idle wait between claims when no wake-up arrives (default: 1s on SQLite,
    /// 60s on Postgres, which is woken by LISTEN/NOTIFY; timers and expiring leases wake
    /// it on time either way). On SQLite the heartbeat pinger polls as often.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub poll_interval: Option<std::time::Duration>,
    /// How long in-flight runs may take to finish after SIGTERM/Ctrl-C.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: std::time::Duration,
    /// Worker id stored as the lease owner (default: host:pid:random).
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Only run this queue (repeat for several; default: every queue). Deploy runs of
    /// agent A use the queue `deploy:A`.
    #[arg(long = "queue")]
    pub queues: Vec<String>,
    /// The embedded demo: start the Akash devnet SIMULATOR in process (seeded with a
    /// demo wallet and deployments draining at different speeds), point the cosmos
    /// executor at it, and schedule `topup.escrow` every 30 s. Watch it with
    /// `morpheus schedules runs demo-topup` and `morpheus logs <run>`.
    #[arg(long)]
    pub demo: bool,
    /// Serve the HTTP API, live events and dashboard here (e.g. 127.0.0.1:7420; default:
    /// `[api] listen`, or nothing; with --demo, 127.0.0.1:7420). Without API tokens only
    /// a loopback address is accepted.
    #[arg(long, env = "MORPHEUS_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Where deploys keep artifacts, and which directories they may capture.
    #[command(flatten)]
    pub deploy_paths: DeployPathArgs,
    /// Most files in one deploy snapshot (after the ignore rules).
    #[arg(long, env = "MORPHEUS_DEPLOY_MAX_FILES", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub deploy_max_files: u64,
    /// Most bytes of one compressed deploy snapshot (default 1 GiB).
    #[arg(long, env = "MORPHEUS_DEPLOY_MAX_SNAPSHOT_BYTES", default_value_t = 1 << 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub deploy_max_snapshot_bytes: u64,
    /// How long a deploy's start command has to answer HTTP before the run fails.
    #[arg(long, env = "MORPHEUS_DEPLOY_READY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub deploy_ready_timeout: std::time::Duration,
    /// Time limit of each deploy install or build command.
    #[arg(long, env = "MORPHEUS_DEPLOY_COMMAND_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub deploy_command_timeout: std::time::Duration,
}

/// `morpheus serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to serve (default: `[api] listen`, else 127.0.0.1:7420). Without API tokens
    /// only a loopback address is accepted.
    #[arg(long, env = "MORPHEUS_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Which directories deploy specs set through the API may point into.
    #[command(flatten)]
    pub deploy_paths: DeployPathArgs,
}

/// Where deploys keep their artifacts and which directories they may capture (shared by
/// `up`, which captures, and `deploy`, which validates specs).
#[derive(Debug, Clone, Args)]
pub struct DeployPathArgs {
    /// Data directory: snapshots are stored under DATA_DIR/artifacts/<agent>/.
    #[arg(
        long,
        global = true,
        env = "MORPHEUS_DATA_DIR",
        default_value = "./.morpheus"
    )]
    pub data_dir: PathBuf,
    /// A directory deploy specs may point into (repeat for several; in the environment,
    /// a colon-separated list). Default: the current directory.
    #[arg(
        long = "allowed-root",
        global = true,
        env = "MORPHEUS_DEPLOY_ALLOWED_ROOTS",
        value_delimiter = ':'
    )]
    pub allowed_roots: Vec<PathBuf>,
}

/// `morpheus deploy …`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Paths.
    #[command(flatten)]
    pub paths: DeployPathArgs,
    /// Without a subcommand: synthesize the Akash deploy of the project's morpheus.yaml
    /// (SDL, manifest version, groups, the image's content-hash tag) and print it,
    /// building nothing and touching no chain.
    #[arg(long)]
    pub dry_run: bool,
    /// Options of --dry-run (and of the Akash deploy: --project-dir, --json).
    #[command(flatten)]
    pub dry_run_args: DeployDryRunArgs,
    /// Options of the Akash deploy (no subcommand, no --dry-run).
    #[command(flatten)]
    pub akash: AkashDeployArgs,
    /// What to do with directory deploys (Docker sandboxes).
    #[command(subcommand)]
    pub command: Option<DeployCommand>,
}

/// `morpheus deploy` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Set or show an agent's deployment spec.
    #[command(subcommand)]
    Spec(SpecCommand),
    /// Start a deploy run: snapshot the spec's directory and run it in a new sandbox.
    /// Prints the run id (and with --wait, the URL or the failure).
    Start {
        /// Agent id.
        #[arg(long)]
        agent: String,
        /// preview or production (default: the spec's target).
        #[arg(long, value_parser = parse_target)]
        target: Option<morpheus_workflows::deploy::Target>,
        /// A note stored with the run.
        #[arg(long)]
        note: Option<String>,
        /// Wait until the run is ready (print its URL) or failed (print why, exit 1).
        #[arg(long)]
        wait: bool,
    },
    /// Stop one deploy run: remove its sandbox and mark it stopped.
    Stop {
        /// Agent id.
        #[arg(long)]
        agent: String,
        /// The deploy run id.
        run: String,
        /// Wait until it is stopped.
        #[arg(long)]
        wait: bool,
    },
    /// An agent's deploy runs, newest first: status, target, snapshot hash, sandbox.
    List {
        /// Agent id.
        #[arg(long)]
        agent: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// An agent's snapshots, newest first.
    Snapshots {
        /// Agent id.
        #[arg(long)]
        agent: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Deploy an earlier snapshot into a fresh sandbox (a rollback).
    Redeploy {
        /// Agent id.
        #[arg(long)]
        agent: String,
        /// Snapshot id (see `deploy snapshots`).
        #[arg(long)]
        snapshot: String,
        /// preview or production (default: the spec's target).
        #[arg(long, value_parser = parse_target)]
        target: Option<morpheus_workflows::deploy::Target>,
        /// A note stored with the run.
        #[arg(long)]
        note: Option<String>,
        /// Wait until the run is ready (print its URL) or failed (print why, exit 1).
        #[arg(long)]
        wait: bool,
    },
    /// Remove sandbox containers labelled by Morpheus whose runs are finished.
    Gc {
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// `morpheus deploy spec …`.
#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// Create or replace an agent's deployment spec (validated first; a bad spec is
    /// refused and nothing is written).
    Set(Box<SpecSetArgs>),
    /// Show an agent's deployment spec.
    Show {
        /// Agent id.
        #[arg(long)]
        agent: String,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// `morpheus deploy spec set`.
#[derive(Debug, Args)]
pub struct SpecSetArgs {
    /// Agent id ([A-Za-z0-9_.-], at most 63 characters).
    #[arg(long)]
    pub agent: String,
    /// Name of the deployment.
    #[arg(long)]
    pub name: String,
    /// Absolute directory to deploy, inside an --allowed-root.
    #[arg(long)]
    pub source_dir: String,
    /// Build command, run in the sandbox's /workspace/app (`true` for none).
    #[arg(long)]
    pub build: String,
    /// Long-running start command serving HTTP on --port.
    #[arg(long)]
    pub start: String,
    /// Install command, run before the build.
    #[arg(long)]
    pub install: Option<String>,
    /// Port the start command listens on (1024-65535; default 3000).
    #[arg(long, allow_negative_numbers = true)]
    pub port: Option<i64>,
    /// Environment variable of the sandbox, KEY=VALUE (repeatable). Stored in the database
    /// as given and shown by `deploy spec show`; for a secret give a sealed value
    /// (`KEY=sealed:v1:…`, from `morpheus secrets seal`), opened only in the sandbox.
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Base image of the sandbox (must have /bin/sh; default node:22-bookworm-slim).
    #[arg(long)]
    pub image: Option<String>,
    /// Default target of `deploy start`: preview (default) or production.
    #[arg(long, value_parser = parse_target)]
    pub target: Option<morpheus_workflows::deploy::Target>,
    /// CPU limit of the sandbox, in cores (e.g. 0.5).
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory limit of the sandbox (e.g. 512m, 1g).
    #[arg(long)]
    pub memory: Option<String>,
}

fn parse_target(
    text: &str,
) -> Result<morpheus_workflows::deploy::Target, morpheus_workflows::deploy::UnknownTarget> {
    text.parse()
}

/// `morpheus start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Workflow name (e.g. `shell`).
    pub workflow: String,
    /// Input as JSON, or @FILE to read it from a file (@- for stdin).
    #[arg(long)]
    pub input: String,
    /// Starting twice with the same key returns the first run and creates nothing.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Queue (workers can be limited to queues; queues can have a concurrency limit).
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// Higher priorities are claimed first.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `morpheus runs …`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs with this status (pending, running, sleeping, retrying, waiting,
        /// completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Show a run: status, steps with attempts and timings, error.
    Show {
        /// Run id.
        run: String,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run that has not ended (observed by its worker at the next step
    /// boundary; a step's process is stopped).
    Cancel {
        /// Run id.
        run: String,
    },
    /// Resume a failed or cancelled run: completed steps are kept, failed ones re-run.
    Resume {
        /// Run id.
        run: String,
    },
    /// Start a new run of the same workflow and input that keeps the steps before
    /// --from-step and runs the rest again.
    Fork {
        /// Run id.
        run: String,
        /// The first step to run again.
        #[arg(long)]
        from_step: String,
    },
}

/// `morpheus logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Run id. Without one: the app's own logs, from the provider of the Akash
    /// deployment of the project in --project-dir.
    pub run: Option<String>,
    /// Without a run id: the project directory holding morpheus.yaml (default: the
    /// current directory).
    #[arg(long)]
    pub project_dir: Option<PathBuf>,
    /// Without a run id: the deployment (default: the project's newest).
    #[arg(long)]
    pub dseq: Option<String>,
    /// Without a run id: the last this many lines of each service first.
    #[arg(long, default_value_t = 100)]
    pub tail: u32,
    /// Only this step's lines.
    #[arg(long)]
    pub step: Option<String>,
    /// Only lines at or above this level (trace, debug, info, warn, error).
    #[arg(long)]
    pub level: Option<String>,
    /// Only lines containing these words (full-text phrase match, case-insensitive).
    #[arg(long)]
    pub grep: Option<String>,
    /// Only lines since this time: RFC 3339 (2026-11-23T10:00:00Z) or an age (10m, 2h).
    #[arg(long)]
    pub since: Option<String>,
    /// Skip this many matching lines.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// At most this many lines.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Keep printing new lines until the run ends (the app's logs: until Ctrl-C).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `morpheus schedules …`.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Add a schedule (refused, and nothing stored, if the name is taken, the workflow
    /// unknown, the input invalid or the trigger malformed).
    Add(Box<ScheduleAddArgs>),
    /// Schedules with their next tick and last run.
    List {
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// One schedule: its definition, state and latest heartbeat pings.
    Show {
        /// Schedule name.
        name: String,
        /// One JSON document (`{"schedule": …, "heartbeats": […]}`).
        #[arg(long)]
        json: bool,
    },
    /// Stop firing (a running run is not affected).
    Pause {
        /// Schedule name.
        name: String,
    },
    /// Fire again from the next tick (ticks during the pause are not caught up).
    Resume {
        /// Schedule name.
        name: String,
    },
    /// Delete the schedule (its runs stay).
    Delete {
        /// Schedule name.
        name: String,
    },
    /// Runs the schedule started, newest first.
    Runs {
        /// Schedule name.
        name: String,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// `morpheus schedules add`.
#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    /// Unique schedule name.
    pub name: String,
    /// Workflow to start.
    #[arg(long)]
    pub workflow: String,
    /// Input as JSON, or @FILE.
    #[arg(long)]
    pub input: String,
    /// Cron expression: 5 fields (min hour day month weekday) or 6–7 with seconds first.
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    pub cron: Option<String>,
    /// Fixed interval (30s, 5m, 1h), on multiples of it since the epoch.
    #[arg(long)]
    pub every: Option<String>,
    /// IANA time zone for --cron (default UTC).
    #[arg(long, requires = "cron")]
    pub timezone: Option<String>,
    /// When a tick comes while the previous run is going: skip | queue_one | allow.
    #[arg(long, default_value = "skip")]
    pub overlap: String,
    /// Ticks missed while no scheduler ran: skip_missed | run_once | run_all.
    #[arg(long, default_value = "skip_missed")]
    pub catch_up: String,
    /// Queue of the runs.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// Priority of the runs.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Ping this http(s) URL after each run completes, and URL/fail after one fails (the
    /// healthchecks.io / Cronitor convention); cancelled runs are not pinged. Not to be
    /// confused with `up --heartbeat`, the lease renewal interval.
    #[arg(long, value_name = "URL")]
    pub heartbeat_url: Option<String>,
}

/// `morpheus queues …`.
#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Set a queue's concurrency limit: at most N of its runs in progress at once across
    /// all workers (enforced in the database). A run parked for a step retry keeps its
    /// slot; one sleeping or waiting for an event gives it back.
    Set {
        /// Queue name.
        name: String,
        /// Most runs running at once.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "unlimited", required_unless_present = "unlimited")]
        concurrency: Option<u32>,
        /// Remove the limit.
        #[arg(long)]
        unlimited: bool,
    },
    /// Queues with their limits and load.
    List {
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// `morpheus extensions`.
#[derive(Debug, Subcommand)]
pub enum ExtensionsCommand {
    /// Configured extensions with the state each worker reports (ready, restarting,
    /// failed), restarts, calls, failures and mean call time.
    List {
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Start one here, print its configuration and what it declares (methods, schemas),
    /// and what the workers report about it.
    Inspect {
        /// The extension's name.
        name: String,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Start one here and call a method directly (no run, nothing recorded): prints the
    /// result as JSON, the extension's log lines on stderr.
    Call {
        /// The extension's name.
        name: String,
        /// The method.
        method: String,
        /// Params: inline JSON, @file, or @- for stdin.
        #[arg(long, default_value = "{}")]
        params: String,
        /// The idempotency key sent in the call's context (default: a fresh one).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

/// `morpheus prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Delete runs that finished (completed, failed, cancelled) longer ago than this
    /// (e.g. 7d, 12h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub completed_older_than: std::time::Duration,
    /// Only report what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Runs deleted per transaction (smaller = shorter locks; on SQLite every other
    /// write waits for the current batch).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `morpheus events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Deliver an event once (a second delivery of the same key is refused).
    Send {
        /// Event key.
        key: String,
        /// JSON payload, or @FILE.
        #[arg(long, default_value = "null")]
        payload: String,
    },
}

/// `morpheus bench`. With a `postgres://` --database-url it benchmarks that database;
/// otherwise a fresh temporary SQLite file (never the operator's own database).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Another benchmark than the default runs×steps one.
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// Number of runs.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// No-op steps per run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    /// Runs executing at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Also start this many runs that park (durable sleep of an hour) before the
    /// measured ones, to show memory stays flat with many parked runs.
    #[arg(long, default_value_t = 0)]
    pub parked: u64,
    /// Before measuring, seed this many finished runs (each with a step and a log line)
    /// to show how claims and steps behave as history grows.
    #[arg(long, default_value_t = 0)]
    pub history: u64,
    /// How long ago the seeded history finished.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub history_age: std::time::Duration,
    /// While measuring, prune finished runs older than 7 days (the seeded history) in
    /// the background, to show claims stay fast while retention runs.
    #[arg(long)]
    pub prune_during: bool,
    /// Postgres only: also run `pgbench -N` on the same database with the same client
    /// count for the same duration (rounded up to whole seconds) and print
    /// `ratio_to_pgbench` = steps_per_s / pgbench_tps. Creates pgbench's tables there.
    #[arg(long)]
    pub compare_pgbench: bool,
    /// Where to put the temporary SQLite database (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// First measure the raw write path on the same database: the same tables and rows
    /// per step (the step row, the fenced update of its run), the same durability
    /// settings, --concurrency steps per commit, from Rust with no engine logic; report
    /// `ceiling_steps_per_s` and `fraction_of_ceiling`.
    #[arg(long)]
    pub ceiling: bool,
    /// Repeat the workload this many times (fresh runs each time) and report the
    /// median steps/s and the spread (the 200×10 workload lasts 0.1–0.3 s: one
    /// measurement is noise on a shared machine).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub repeat: u64,
    /// Also print where a step's time goes: for each phase (claim, journal load, the
    /// step body, serialization, the hop to the group committer, its wait for the batch,
    /// the commit, the hop back and the wake-up of the run's task) its total and its
    /// mean per step, measured inside the engine for every step of the workload.
    #[arg(long)]
    pub profile: bool,
}

/// The benchmarks besides the default one.
#[derive(Debug, Subcommand)]
pub enum BenchMode {
    /// The HTTP API over a large history: list and log-page latency, live-event fan-out
    /// to many WebSocket clients, and what serving costs the workers' steps/s. Seeds a
    /// fresh database per backend (SQLite: a temporary file; Postgres: the database
    /// `morpheus_bench_api` on the server of the `postgres://` --database-url, dropped
    /// afterwards) and serves the real API in process on 127.0.0.1.
    Api(BenchApiArgs),
    /// Per-call overhead of the extension hosts over an in-process executor, side by
    /// side in one run: the same no-op call through an in-process Rust executor, the
    /// WASM host (a WAT echo plugin), the stdio host (an embedded Python 3 program) and
    /// the JSON-RPC host (the same program serving HTTP on loopback, in its own
    /// process), each through the executor call a step makes. Prints sequential p50/p99,
    /// overhead (host p50 − in-process p50) against the budgets (WASM ≤ 0.2 ms, stdio ≤
    /// 0.5 ms, JSON-RPC ≤ 1 ms: PASS or OVER) and calls/s at --concurrency. Progress
    /// goes to stderr, the table to stdout.
    Extensions(BenchExtensionsArgs),
    /// Wall time of `fund` runs split by leg (checks, swap, deposit, stake), and the
    /// engine's own time per leg beyond the chains' and the route's latency (budget ≤ 5
    /// ms). Starts anvil (instant mining) as a child process unless --evm-rpc is given,
    /// deploys the devnet contracts, and runs the Akash devnet and Skip Go route
    /// SIMULATORS and the engine (a temporary SQLite file) in process.
    Fund(BenchFundArgs),
    /// Wall time of `akash.deploy` runs split by phase (synthesize, create deployment,
    /// bid wait, lease, manifest, ready wait), and the engine's own time beyond the
    /// simulators' latency and the block times (wall − executor calls − durable sleeps).
    /// Runs the Akash devnet and provider SIMULATORS (containers on the local Docker
    /// engine) and the engine (a temporary SQLite file) in process; builds and pushes a
    /// tiny busybox image to --registry once; closes each deployment after its run. Also
    /// times the dry-run synthesis of a project with three sidecars (budget ≤ 50 ms).
    /// Progress goes to stderr, the table to stdout.
    Deploy(BenchDeployArgs),
    /// What one idle `morpheus up` costs its Postgres database: transactions committed
    /// per minute (`pg_stat_database`) by a worker, a scheduler and the heartbeat pinger
    /// with nothing to do, and the latency of one wake-up (a run started by another
    /// connection, until it completes). Needs a postgres:// --database-url; creates and
    /// drops the database `morpheus_bench_idle` on that server.
    Idle(BenchIdleArgs),
    /// Many worker processes on one Postgres: for each worker count in --workers, starts
    /// that many child processes (this binary, each one worker with --concurrency runs in
    /// flight), runs the runs×steps no-op workload through them, and prints steps/s and
    /// the claim latency p50/p99 the workers measured, one row per worker count. Needs a
    /// postgres:// --database-url; creates and drops the database `morpheus_bench_workers`
    /// on that server.
    Workers(BenchWorkersArgs),
}

/// `morpheus bench workers`.
#[derive(Debug, Args)]
pub struct BenchWorkersArgs {
    /// Worker counts to measure, in order (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: Vec<u32>,
    /// Runs per measurement (shared by all workers of that measurement).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// No-op steps per run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    /// Runs in flight per worker process.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Internal: run as one of the benchmark's worker processes on this queue (started by
    /// `bench workers` itself, not by hand).
    #[arg(long, hide = true, value_name = "QUEUE")]
    pub child_queue: Option<String>,
}

/// `morpheus bench idle`.
#[derive(Debug, Args)]
pub struct BenchIdleArgs {
    /// How long to count idle commits.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
}

/// `morpheus bench fund`.
#[derive(Debug, Args)]
pub struct BenchFundArgs {
    /// Measured runs (after one warm-up run); medians are reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub runs: u64,
    /// The anvil binary to start (`npm ci` in bin/devnets/contracts installs one under
    /// node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil).
    #[arg(long, env = "MORPHEUS_TEST_ANVIL", default_value = "anvil")]
    pub anvil: PathBuf,
    /// Use this EVM node (anvil with instant mining, chain 31337) instead of starting one.
    #[arg(long, value_name = "URL")]
    pub evm_rpc: Option<url::Url>,
    /// Block time of the in-process Akash devnet simulator.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub akash_block_time: std::time::Duration,
    /// How often the route simulator settles swaps and the workflow asks for delivery.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub route_poll: std::time::Duration,
    /// Also print, for the last run, each step's gap since the previous commit, its
    /// executor time and the rest of its span (the commit): where the engine's time goes.
    #[arg(long)]
    pub per_step: bool,
    /// Also print the engine's step-time profile of the measured runs (as `bench
    /// --profile`: claims, journal loads, the hop to the group committer, commits,
    /// acknowledgements), and add it to the JSON.
    #[arg(long)]
    pub profile: bool,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `morpheus bench deploy`.
#[derive(Debug, Args)]
pub struct BenchDeployArgs {
    /// Measured runs (after one warm-up run); medians are reported. Each deploy is
    /// followed by an `akash.close` run and a wait until its containers are removed.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub runs: u64,
    /// Block time of the in-process Akash devnet simulator; also the workflow's seconds
    /// per block, so it polls bids and readiness once a block.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub akash_block_time: std::time::Duration,
    /// How long the workflow collects bids after creating the deployment before it
    /// chooses one (`morpheus deploy --bid-window`, 18s there). Its durable sleeps are
    /// not counted as the engine's time.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub bid_window: std::time::Duration,
    /// The registry (`host:port`) the benchmark's image is pushed to and the provider
    /// simulator pulls it from.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub registry: String,
    /// A statically linked busybox: the benchmark's image is `FROM scratch` with it,
    /// serving HTTP with its httpd.
    #[arg(long, env = "MORPHEUS_TEST_BUSYBOX", default_value = "/bin/busybox")]
    pub busybox: PathBuf,
    /// Also print, for the last run, each journal entry's gap since the previous one,
    /// its executor time, the durable sleep it asked for and the rest of its span (the
    /// commit): where the engine's time goes.
    #[arg(long)]
    pub per_step: bool,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `morpheus bench extensions`.
#[derive(Debug, Args)]
pub struct BenchExtensionsArgs {
    /// Sequential calls per host (after 200 warm-up calls).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub calls: u32,
    /// Calls per host for the throughput figure.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub throughput_calls: u32,
    /// Calls in flight at once for the throughput figure.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Also measure full durable steps: this many `pipeline` runs per host, each step a
    /// call to that host, through the engine on a fresh temporary SQLite file, with
    /// --concurrency runs in flight.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub durable_runs: Option<u32>,
    /// Steps per durable run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub durable_steps: u32,
    /// The Python 3 interpreter that runs the stdio and JSON-RPC extensions.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Which databases `morpheus bench api` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    /// A fresh temporary SQLite file.
    Sqlite,
    /// A fresh database on the Postgres server of --database-url.
    Postgres,
    /// SQLite, then Postgres.
    Both,
}

/// `morpheus bench api`.
#[derive(Debug, Args)]
pub struct BenchApiArgs {
    /// Which backends to measure.
    #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
    pub backend: BenchBackend,
    /// Finished runs seeded before measuring (every 20th failed, every 20th cancelled).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Log lines seeded before measuring, interleaved over --log-runs runs.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_lines: u64,
    /// How many of the seeded runs hold the log lines.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub log_runs: u64,
    /// Requests timed per list or log-page measurement.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    pub requests: u64,
    /// WebSocket clients connected while the fan-out is measured.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub ws_clients: u64,
    /// Log lines the fan-out worker writes (each a step of its own, so each commits).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Pause between two of those lines.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub event_interval: std::time::Duration,
    /// WebSocket clients following logs live while the workload runs with the API: each
    /// follows one run of the workload (`/api/v1/events?run=…`), spread over the round.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub followers: u64,
    /// Each follower gets every event of every run instead (the harshest case: 20
    /// clients × every step's log line, decoded in this same process).
    #[arg(long)]
    pub follow_all: bool,
    /// Runs of the steps/s workload (`morpheus bench`'s, plus a log line per step).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub workload_runs: u64,
    /// No-op steps per workload run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub workload_steps: u64,
    /// Workload runs executing at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Rounds of the workload without and with the API (alternating); medians are
    /// reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub rounds: u64,
    /// Print one JSON line per backend instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where to put the temporary SQLite database (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// `morpheus devnet …`.
#[derive(Debug, Subcommand)]
pub enum DevnetCommand {
    /// An Akash devnet SIMULATOR: the REST subset the flows use over an in-memory
    /// ledger that verifies signatures and sequences and drains escrow by lease rate.
    Akash(DevnetAkashArgs),
    /// A Skip Go route SIMULATOR (API v2 subset: route, msgs, tx track/status) that swaps
    /// devnet USDC on an EVM node (anvil) into uakt on the Akash devnet simulator.
    Skip(Box<DevnetSkipArgs>),
    /// Deploy the devnet EVM contracts (MockUSDC, MorStakingVault, SkipBridge) to an EVM
    /// node, optionally mint USDC, and print their addresses as JSON.
    Contracts(Box<DevnetContractsArgs>),
    /// An Akash provider SIMULATOR: registers with the Akash devnet simulator, bids on
    /// orders its attributes satisfy, accepts manifests (provider JWT checked) and runs
    /// each lease's services as containers on the local Docker engine.
    Provider(Box<DevnetProviderArgs>),
}

/// Environment variable holding the provider simulator's mnemonic (never on the
/// command line: it would show in `ps`).
pub const DEVNET_PROVIDER_MNEMONIC_ENV: &str = "MORPHEUS_DEVNET_PROVIDER_MNEMONIC";

/// `morpheus devnet provider`.
#[derive(Debug, Args)]
pub struct DevnetProviderArgs {
    /// Address to serve on (port 0 picks a free port; the banner shows it).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// REST URL of the Akash devnet simulator (`morpheus devnet akash`) to register
    /// with and bid on.
    #[arg(long, value_name = "URL")]
    pub akash_rest: url::Url,
    /// A provider attribute, KEY=VALUE (repeatable): the provider bids only on orders
    /// whose required attributes it all has.
    #[arg(long = "attribute", value_name = "KEY=VALUE")]
    pub attributes: Vec<String>,
    /// Bid price in uakt per block, as a decimal.
    #[arg(long, default_value = "10")]
    pub price: String,
    /// Blocks after an order opens before the provider bids.
    #[arg(long, default_value_t = 2)]
    pub bid_delay_blocks: u64,
    /// The host URI to register (default: http://<listen address>).
    #[arg(long, value_name = "URL")]
    pub host_uri: Option<url::Url>,
    /// File holding the provider key's BIP-39 mnemonic. Without it, the mnemonic is
    /// read from $MORPHEUS_DEVNET_PROVIDER_MNEMONIC; without either, a fresh key is
    /// made (a new provider address on every start).
    #[arg(long, value_name = "PATH")]
    pub mnemonic_file: Option<PathBuf>,
    /// Milliseconds between checks of the chain for closed leases (whose containers
    /// are then removed).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,
}

/// Environment variable holding the hex private key that deploys the devnet contracts
/// and that the route simulator settles and refunds with (the bridge owner).
pub const DEVNET_EVM_KEY_ENV: &str = "MORPHEUS_DEVNET_EVM_KEY";

/// Where the devnet EVM key comes from: never on the command line (it would show in
/// `ps`), only by reference.
#[derive(Debug, Args)]
pub struct DevnetEvmKeyArgs {
    /// File holding the hex private key of the deployer / bridge owner. Without it, the
    /// key is read from $MORPHEUS_DEVNET_EVM_KEY; without either, anvil's well-known
    /// account 0 key is used, but only when the node reports chain id 31337 (anvil).
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// `morpheus devnet skip`.
#[derive(Debug, Args)]
pub struct DevnetSkipArgs {
    /// Address to serve on (port 0 picks a free port; the banner shows it).
    #[arg(long, default_value = "127.0.0.1:26680")]
    pub listen: std::net::SocketAddr,
    /// JSON-RPC URL of the EVM devnet (anvil) holding the contracts.
    #[arg(long, value_name = "URL")]
    pub evm_rpc: url::Url,
    /// REST URL of the Akash devnet simulator (`morpheus devnet akash`) credited with
    /// the swapped uakt.
    #[arg(long, value_name = "URL")]
    pub akash_rest: url::Url,
    /// The SkipBridge contract (see `morpheus devnet contracts`).
    #[arg(long, value_name = "ADDR")]
    pub bridge: String,
    /// The USDC token (default: the one the bridge was deployed with).
    #[arg(long, value_name = "ADDR")]
    pub usdc: Option<String>,
    /// uakt per USDC base unit, as a decimal (e.g. 2.5: 1 USDC = 2.5 AKT, both 6
    /// decimals).
    #[arg(long, default_value = "2.5")]
    pub price: String,
    /// Route fee in basis points of the gross output.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub fee_bps: u32,
    /// Price impact reported by routes, in percent; /v2/fungible/msgs refuses when it
    /// exceeds the caller's slippage tolerance.
    #[arg(long, default_value = "0.5")]
    pub price_impact_pct: String,
    /// Milliseconds between polls of the bridge's SwapRequested logs.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,
    /// The bridge owner's key.
    #[command(flatten)]
    pub key: DevnetEvmKeyArgs,
}

/// `morpheus devnet contracts`.
#[derive(Debug, Args)]
pub struct DevnetContractsArgs {
    /// JSON-RPC URL of the EVM node to deploy to.
    #[arg(long, value_name = "URL")]
    pub evm_rpc: url::Url,
    /// Mint USDC to an account after deploying: ADDR=AMOUNT, AMOUNT in base units (6
    /// decimals: 1000000 = 1 USDC). Repeatable.
    #[arg(long, value_name = "ADDR=AMOUNT")]
    pub mint: Vec<String>,
    /// The deployer's key (it becomes the USDC minter, vault pauser and bridge owner).
    #[command(flatten)]
    pub key: DevnetEvmKeyArgs,
}

/// `morpheus devnet akash`.
#[derive(Debug, Args)]
pub struct DevnetAkashArgs {
    /// Address to serve on (port 0 picks a free port; the banner shows it).
    #[arg(long, default_value = "127.0.0.1:26617")]
    pub listen: std::net::SocketAddr,
    /// Milliseconds between blocks (0: blocks only via POST /simulator/blocks).
    #[arg(long, default_value_t = 200)]
    pub block_time_ms: u64,
    /// Create a funded demo wallet (public demo mnemonic) and deployments draining
    /// at different speeds.
    #[arg(long)]
    pub seed_demo: bool,
    /// Chain id to report and verify signatures for.
    #[arg(long, default_value = "morpheus-devnet-1")]
    pub chain_id: String,
}
