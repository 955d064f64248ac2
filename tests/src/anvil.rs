//! A real anvil (Foundry's EVM dev node, from the npm package
//! `@foundry-rs/anvil-linux-amd64`) on a free loopback port, killed on drop.
//!
//! The binary is `$MORPHEUS_TEST_ANVIL` (exported by `scripts/test`), else the one
//! `npm ci` in `bin/devnets/contracts` put in its `node_modules`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::devnet::{free_port, http_request};

/// Environment variable naming the anvil binary.
pub const ANVIL_ENV: &str = "MORPHEUS_TEST_ANVIL";

/// How anvil mines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mining {
    /// A block per transaction, at once (anvil's default).
    Instant,
    /// A block every this many seconds, transactions or not.
    BlockTime(u64),
}

/// The anvil binary under test.
///
/// # Panics
/// If neither `$MORPHEUS_TEST_ANVIL` nor the node_modules binary exists.
pub fn anvil_bin() -> PathBuf {
    if let Some(path) = std::env::var_os(ANVIL_ENV) {
        return PathBuf::from(path);
    }
    let fallback = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../bin/devnets/contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        fallback.exists(),
        "no anvil: set {ANVIL_ENV} or run `npm ci` in bin/devnets/contracts (scripts/test does both)"
    );
    fallback
}

/// A running anvil. Dropping it kills it (printing its log if the test is panicking).
pub struct Anvil {
    child: Child,
    /// Its JSON-RPC URL, `http://127.0.0.1:<port>`.
    pub url: String,
    addr: SocketAddr,
    log_path: PathBuf,
    _dir: TempDir,
}

impl Anvil {
    /// Starts anvil on a free loopback port (chain id 31337, anvil's ten well-known
    /// accounts) and waits up to 30 s for `eth_chainId` to answer.
    ///
    /// # Panics
    /// If it does not start in time.
    pub fn start(mining: Mining) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("anvil.log");
        let port = free_port();
        let mut command = Command::new(anvil_bin());
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(File::create(&log_path).expect("anvil log"))
            .stderr(Stdio::inherit());
        if let Mining::BlockTime(seconds) = mining {
            command.args(["--block-time", &seconds.to_string()]);
        }
        let child = command.spawn().expect("spawn anvil");
        let mut anvil = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log_path,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if anvil.try_rpc("eth_chainId", json!([])).is_ok() {
                return anvil;
            }
            if let Ok(Some(status)) = anvil.child.try_wait() {
                panic!("anvil exited with {status}: {}", anvil.log());
            }
            assert!(
                Instant::now() < deadline,
                "anvil did not answer within 30 s: {}",
                anvil.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Calls a JSON-RPC method and returns its `result`.
    ///
    /// # Panics
    /// On a transport error or a JSON-RPC error.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        self.try_rpc(method, params)
            .unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    /// Calls a JSON-RPC method: its `result`, or the error as text.
    pub fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        // std sockets, not reqwest's blocking client: this runs inside tokio tests too.
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = http_request(self.addr, "POST", "/", Some(&body.to_string()))
            .map_err(|e| e.to_string())?;
        let response: Value = serde_json::from_str(&response.body).map_err(|e| e.to_string())?;
        match response.get("error") {
            Some(error) => Err(error.to_string()),
            None => Ok(response["result"].clone()),
        }
    }

    /// The latest block number.
    pub fn block_number(&self) -> u64 {
        let hex = self.rpc("eth_blockNumber", json!([]));
        u64::from_str_radix(hex.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    /// What anvil printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- anvil log ---\n{}", self.log());
        }
    }
}
