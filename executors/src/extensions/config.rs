//! `[[extensions]]` entries: what to load, how to reach it, what it may do, and how to
//! restart it. The schema follows the Morphir extension design:
//!
//! ```toml
//! [[extensions]]
//! name = "ledger"                 # the executor name steps use
//! enabled = true
//! protocol = "stdio"              # stdio | jsonrpc | extism
//! source = { type = "process", command = "python3", args = ["./ledger.py"] }
//! permissions = { max_execution_time = "30s", max_memory = "256MB", env = ["PATH"], filesystem = ["/srv/ledger"] }
//! restart = { strategy = "exponential", max_retries = 5, initial_delay = "200ms", max_delay = "10s" }
//! config = { currency = "uakt" }  # handed to the extension in `initialize`
//! queue = 64                      # calls that may wait for a busy extension
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How Morpheus talks to an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A child process speaking JSON Lines on stdin/stdout.
    Stdio,
    /// JSON-RPC 2.0 over HTTP POST.
    Jsonrpc,
    /// An Extism WASM plugin run in-process, sandboxed.
    Extism,
}

impl Protocol {
    /// The name used in configuration and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::Jsonrpc => "jsonrpc",
            Self::Extism => "extism",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the extension lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// A program started by the worker (`stdio`).
    Process {
        /// The program (looked up in `PATH` when it has no slash).
        command: String,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Variables set for it (beside the allow-listed ones from the worker's
        /// environment, see [`Permissions::env`]).
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// A service reached over HTTP (`jsonrpc`).
    Http {
        /// The URL requests are POSTed to.
        url: String,
    },
    /// A WASM module file (`extism`).
    Wasm {
        /// Path of the `.wasm` file (or `.wat`, WebAssembly text, compiled on load).
        path: PathBuf,
    },
}

/// Network access granted to an extension (for WASM, the hosts Extism's `http_request`
/// may reach).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum NetworkGrant {
    /// `false`: none (the default); `true`: any host.
    All(bool),
    /// Only these hosts: names or IP addresses, without scheme, port or path; `*` and
    /// `?` are globs (`"*.example.com"`). The port of a request is not checked.
    Hosts(Vec<String>),
}

/// By hand rather than `untagged`, whose error ("did not match any variant") would not
/// say what is expected.
impl<'de> Deserialize<'de> for NetworkGrant {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GrantVisitor;
        impl<'de> serde::de::Visitor<'de> for GrantVisitor {
            type Value = NetworkGrant;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("false, true or a list of host names")
            }
            fn visit_bool<E: serde::de::Error>(self, all: bool) -> Result<Self::Value, E> {
                Ok(NetworkGrant::All(all))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut hosts: A,
            ) -> Result<Self::Value, A::Error> {
                let mut list = Vec::new();
                while let Some(host) = hosts.next_element::<String>()? {
                    list.push(host);
                }
                Ok(NetworkGrant::Hosts(list))
            }
        }
        deserializer.deserialize_any(GrantVisitor)
    }
}

impl Default for NetworkGrant {
    fn default() -> Self {
        Self::All(false)
    }
}

/// What an extension may do. Limits that a protocol cannot enforce are refused at
/// load time rather than silently ignored (see [`ExtensionConfig::validate`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// Longest a call may take (`"30s"`); past it the call fails retryably and the
    /// extension is restarted. Default 60 s; a step's own deadline still applies.
    #[serde(default, with = "opt_duration")]
    pub max_execution_time: Option<Duration>,
    /// Memory limit (`"64MB"`, `"1GiB"`): the WASM memory limit, or `RLIMIT_AS` for a
    /// process.
    #[serde(default)]
    pub max_memory: Option<String>,
    /// Network access: WASM host HTTP (`false`, `true`, or a list of hosts). Processes
    /// and HTTP services are not sandboxed by Morpheus, so only `false`/absent is
    /// accepted for them.
    #[serde(default)]
    pub network: NetworkGrant,
    /// Directories: WASM preopens (read-write); for a process, its working directory
    /// (at most one entry; the worker's own when absent).
    #[serde(default)]
    pub filesystem: Vec<PathBuf>,
    /// Names of the worker's environment variables a process may see (default: only
    /// `PATH`, `HOME`, `LANG`, `TZ`); everything else is withheld.
    #[serde(default)]
    pub env: Option<Vec<String>>,
}

/// Whether `host` can be an entry of a network grant: a host name, IPv4 address or
/// bracketed IPv6 address (`[::1]`, as a URL spells it), with globs, but no scheme,
/// port, path or whitespace (Extism compares the pattern with the URL's host alone, so
/// an entry with a port would silently match nothing).
fn is_host_pattern(host: &str) -> bool {
    if let Some(address) = host.strip_prefix('[') {
        return address
            .strip_suffix(']')
            .is_some_and(|address| address.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '*' | '?'))
}

/// The environment variables a process sees when its entry names none.
pub const DEFAULT_ENV_ALLOW_LIST: &[&str] = &["PATH", "HOME", "LANG", "TZ"];

/// The default per-call time limit.
pub const DEFAULT_MAX_EXECUTION_TIME: Duration = Duration::from_secs(60);

/// The default number of calls that may wait for a busy extension.
pub const DEFAULT_QUEUE: usize = 64;

/// How a failed extension is brought back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartStrategyName {
    /// A failed extension stays down: calls fail permanently.
    Never,
    /// Restart at once, up to `max_retries` times in a row.
    Immediate,
    /// Restart after `initial_delay`, doubling up to `max_delay`, up to `max_retries`
    /// times in a row.
    Exponential,
}

/// `restart = {…}` as written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// `never` | `immediate` | `exponential`.
    pub strategy: RestartStrategyName,
    /// Restarts in a row before giving up (default 3). A call that succeeds resets the
    /// count.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// First delay (`exponential`; default 100 ms).
    #[serde(default, with = "opt_duration")]
    pub initial_delay: Option<Duration>,
    /// Longest delay (`exponential`; default 30 s).
    #[serde(default, with = "opt_duration")]
    pub max_delay: Option<Duration>,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            strategy: RestartStrategyName::Exponential,
            max_retries: None,
            initial_delay: None,
            max_delay: None,
        }
    }
}

/// The restart strategy, resolved with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartStrategy {
    /// Never restart on failure.
    Never,
    /// Restart immediately, up to `max_retries` times in a row.
    Immediate {
        /// Restarts in a row before giving up.
        max_retries: u32,
    },
    /// Restart with exponential backoff.
    Exponential {
        /// Delay before the first restart.
        initial_delay: Duration,
        /// Cap on the delay.
        max_delay: Duration,
        /// Restarts in a row before giving up.
        max_retries: u32,
    },
}

impl RestartStrategy {
    /// The delay before restart number `attempt` (1-based), or `None` once the strategy
    /// gives up.
    pub fn delay_before(&self, attempt: u32) -> Option<Duration> {
        match *self {
            Self::Never => None,
            Self::Immediate { max_retries } => (attempt <= max_retries).then_some(Duration::ZERO),
            Self::Exponential {
                initial_delay,
                max_delay,
                max_retries,
            } => {
                if attempt > max_retries {
                    return None;
                }
                let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
                Some(initial_delay.saturating_mul(factor).min(max_delay))
            }
        }
    }

    /// Restarts in a row allowed (0 for `never`).
    pub fn max_retries(&self) -> u32 {
        match *self {
            Self::Never => 0,
            Self::Immediate { max_retries } | Self::Exponential { max_retries, .. } => max_retries,
        }
    }
}

impl RestartConfig {
    /// The strategy with defaults filled in.
    pub fn strategy(&self) -> RestartStrategy {
        let max_retries = self.max_retries.unwrap_or(3);
        match self.strategy {
            RestartStrategyName::Never => RestartStrategy::Never,
            RestartStrategyName::Immediate => RestartStrategy::Immediate { max_retries },
            RestartStrategyName::Exponential => RestartStrategy::Exponential {
                initial_delay: self.initial_delay.unwrap_or(Duration::from_millis(100)),
                max_delay: self.max_delay.unwrap_or(Duration::from_secs(30)),
                max_retries,
            },
        }
    }
}

/// One `[[extensions]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionConfig {
    /// The executor name steps use (`ctx.step(..).executor(name)`). Must not clash with
    /// a built-in executor.
    pub name: String,
    /// Disabled entries are checked but not loaded (default `true`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How to talk to it.
    pub protocol: Protocol,
    /// Where it lives.
    pub source: Source,
    /// What it may do.
    #[serde(default)]
    pub permissions: Permissions,
    /// How it is restarted after a failure (default: exponential, 3 in a row).
    #[serde(default)]
    pub restart: RestartConfig,
    /// Handed to the extension in `initialize` as `config`.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Calls that may wait while the extension is busy (default 64); more are refused
    /// retryably, so a flood backs off instead of piling up in memory.
    #[serde(default)]
    pub queue: Option<usize>,
}

fn yes() -> bool {
    true
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl ExtensionConfig {
    /// Checks the entry; the error names the entry and the field, on one line.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(format!(
                "extension '{name}': name: use 1-64 letters, digits, '-', '_' or '.'"
            ));
        }
        let field =
            |field: &str, problem: String| format!("extension '{name}': {field}: {problem}");
        match (&self.protocol, &self.source) {
            (Protocol::Stdio, Source::Process { command, .. }) => {
                if command.trim().is_empty() {
                    return Err(field("source.command", "must not be empty".into()));
                }
            }
            (Protocol::Jsonrpc, Source::Http { url }) => {
                let parsed = reqwest::Url::parse(url).map_err(|error| {
                    field("source.url", format!("{url:?} is not a URL ({error})"))
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(field(
                        "source.url",
                        format!("{url:?} must be http or https"),
                    ));
                }
            }
            (Protocol::Extism, Source::Wasm { path }) => {
                if path.as_os_str().is_empty() {
                    return Err(field("source.path", "must not be empty".into()));
                }
            }
            (protocol, source) => {
                let expected = match protocol {
                    Protocol::Stdio => "process",
                    Protocol::Jsonrpc => "http",
                    Protocol::Extism => "wasm",
                };
                let given = match source {
                    Source::Process { .. } => "process",
                    Source::Http { .. } => "http",
                    Source::Wasm { .. } => "wasm",
                };
                return Err(field(
                    "source.type",
                    format!("protocol {protocol} needs a source of type \"{expected}\", not \"{given}\""),
                ));
            }
        }
        let permissions = &self.permissions;
        if permissions.max_execution_time == Some(Duration::ZERO) {
            return Err(field(
                "permissions.max_execution_time",
                "must be positive".into(),
            ));
        }
        if let Some(memory) = &permissions.max_memory {
            let bytes = self.max_memory_bytes()?.unwrap_or(0);
            if bytes < 1 << 20 {
                return Err(field(
                    "permissions.max_memory",
                    format!("{memory:?} is below the 1 MiB minimum"),
                ));
            }
        }
        if self.protocol == Protocol::Jsonrpc && permissions.max_memory.is_some() {
            return Err(field(
                "permissions.max_memory",
                "a remote service's memory cannot be limited from here".into(),
            ));
        }
        if self.protocol != Protocol::Extism && permissions.network != NetworkGrant::All(false) {
            return Err(field(
                "permissions.network",
                format!(
                    "only WASM extensions are sandboxed; a {} extension's network cannot be granted or limited",
                    self.protocol
                ),
            ));
        }
        match self.protocol {
            Protocol::Stdio if permissions.filesystem.len() > 1 => {
                return Err(field(
                    "permissions.filesystem",
                    "a process gets one working directory: give at most one".into(),
                ));
            }
            Protocol::Jsonrpc if !permissions.filesystem.is_empty() => {
                return Err(field(
                    "permissions.filesystem",
                    "a remote service's filesystem cannot be granted from here".into(),
                ));
            }
            _ => {}
        }
        if self.protocol != Protocol::Stdio && permissions.env.is_some() {
            return Err(field(
                "permissions.env",
                "only process extensions have an environment".into(),
            ));
        }
        if let NetworkGrant::Hosts(hosts) = &permissions.network {
            if let Some(bad) = hosts.iter().find(|host| !is_host_pattern(host)) {
                return Err(field(
                    "permissions.network",
                    format!(
                        "{bad:?} is not a host name or address (give it without scheme, port or path; `*` and `?` are globs)"
                    ),
                ));
            }
        }
        if self.queue == Some(0) {
            return Err(field("queue", "must be at least 1".into()));
        }
        if let RestartConfig {
            initial_delay: Some(initial),
            max_delay: Some(max),
            ..
        } = &self.restart
        {
            if initial > max {
                return Err(field(
                    "restart.initial_delay",
                    "must not exceed restart.max_delay".into(),
                ));
            }
        }
        if self.restart.strategy != RestartStrategyName::Exponential
            && (self.restart.initial_delay.is_some() || self.restart.max_delay.is_some())
        {
            return Err(field(
                "restart",
                "initial_delay and max_delay apply only to strategy = \"exponential\"".into(),
            ));
        }
        if self.restart.strategy == RestartStrategyName::Never && self.restart.max_retries.is_some()
        {
            return Err(field(
                "restart.max_retries",
                "strategy = \"never\" does not retry".into(),
            ));
        }
        Ok(())
    }

    /// The memory limit in bytes, if one is set.
    pub fn max_memory_bytes(&self) -> Result<Option<u64>, String> {
        let Some(text) = &self.permissions.max_memory else {
            return Ok(None);
        };
        text.parse::<bytesize::ByteSize>()
            .map(|size| Some(size.as_u64()))
            .map_err(|_| {
                format!(
                    "extension '{}': permissions.max_memory: {text:?} is not a size (for example \"64MB\" or \"1GiB\")",
                    self.name
                )
            })
    }

    /// The per-call time limit.
    pub fn max_execution_time(&self) -> Duration {
        self.permissions
            .max_execution_time
            .unwrap_or(DEFAULT_MAX_EXECUTION_TIME)
    }

    /// How many calls may wait.
    pub fn queue_capacity(&self) -> usize {
        self.queue.unwrap_or(DEFAULT_QUEUE)
    }
}

/// `"30s"`-style durations (humantime) in configuration.
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => {
                serializer.serialize_str(&humantime::format_duration(*duration).to_string())
            }
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| {
            humantime::parse_duration(&text).map_err(|error| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a duration like \"5s\" or \"250ms\" ({error})"
                ))
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ExtensionConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn the_design_examples_parse_and_validate() {
        let stdio = parse(
            r#"name = "ir-validator"
               enabled = true
               protocol = "stdio"
               source = { type = "process", command = "python3", args = ["./validator.py"] }
               permissions = { network = false, filesystem = [] }"#,
        );
        assert_eq!(stdio.validate(), Ok(()));
        let http = parse(
            r#"name = "typescript-generator"
               protocol = "jsonrpc"
               source = { type = "http", url = "http://localhost:3000" }
               restart = { strategy = "exponential", max_retries = 3 }"#,
        );
        assert_eq!(http.validate(), Ok(()));
        assert_eq!(
            http.restart.strategy().delay_before(2),
            Some(Duration::from_millis(200))
        );
        let wasm = parse(
            r#"name = "wasm-optimizer"
               protocol = "extism"
               source = { type = "wasm", path = "./optimizer.wasm" }
               permissions = { max_memory = "10MB", max_execution_time = "5s" }"#,
        );
        assert_eq!(wasm.validate(), Ok(()));
        assert_eq!(wasm.max_memory_bytes(), Ok(Some(10_000_000)));
        assert_eq!(wasm.max_execution_time(), Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_entry_and_the_field() {
        let mismatch = parse(
            r#"name = "x"
               protocol = "stdio"
               source = { type = "http", url = "http://127.0.0.1:1" }"#,
        );
        let error = mismatch.validate().unwrap_err();
        assert!(error.starts_with("extension 'x': source.type:"), "{error}");
        let memory = parse(
            r#"name = "y"
               protocol = "extism"
               source = { type = "wasm", path = "a.wasm" }
               permissions = { max_memory = "lots" }"#,
        );
        assert!(memory
            .validate()
            .unwrap_err()
            .contains("permissions.max_memory"));
        let network = parse(
            r#"name = "z"
               protocol = "stdio"
               source = { type = "process", command = "python3" }
               permissions = { network = true }"#,
        );
        assert!(network
            .validate()
            .unwrap_err()
            .contains("permissions.network"));
        let bad_url = parse(
            r#"name = "u"
               protocol = "jsonrpc"
               source = { type = "http", url = "ftp://host" }"#,
        );
        assert!(bad_url.validate().unwrap_err().contains("source.url"));
        let duration = toml::from_str::<ExtensionConfig>(
            r#"name = "d"
               protocol = "stdio"
               source = { type = "process", command = "python3" }
               permissions = { max_execution_time = "soon" }"#,
        );
        assert!(duration.unwrap_err().to_string().contains("not a duration"));
    }

    #[test]
    fn network_grants_parse_and_bad_ones_name_the_field() {
        let wasm = |grant: &str| {
            toml::from_str::<ExtensionConfig>(&format!(
                "name = \"n\"\nprotocol = \"extism\"\nsource = {{ type = \"wasm\", path = \"a.wasm\" }}\npermissions = {{ network = {grant} }}"
            ))
        };
        assert_eq!(
            wasm("true").unwrap().permissions.network,
            NetworkGrant::All(true)
        );
        let listed = wasm(r#"["127.0.0.1", "*.example.com", "[::1]"]"#).unwrap();
        assert_eq!(listed.validate(), Ok(()));
        assert_eq!(
            listed.permissions.network,
            NetworkGrant::Hosts(vec![
                "127.0.0.1".into(),
                "*.example.com".into(),
                "[::1]".into()
            ])
        );
        for bad in ["\"yes\"", "3", "[1, 2]"] {
            let error = wasm(bad).unwrap_err().to_string();
            assert!(error.contains("network"), "{bad}: {error}");
            assert!(
                error.contains("false, true or a list of host names") || error.contains("string"),
                "{bad}: {error}"
            );
        }
        for bad in [
            "http://api.example.com",
            "api.example.com/v1",
            "127.0.0.1:8080",
            "",
            "a b",
            "[::1",
            "[nonsense]",
        ] {
            let error = wasm(&format!("[{bad:?}]")).unwrap().validate().unwrap_err();
            assert!(
                error.starts_with("extension 'n': permissions.network: "),
                "{bad}: {error}"
            );
            assert!(!error.contains('\n'), "{bad}: {error}");
        }
    }

    #[test]
    fn restart_strategies_give_up_after_their_retries() {
        let never = RestartStrategy::Never;
        assert_eq!(never.delay_before(1), None);
        let immediate = RestartStrategy::Immediate { max_retries: 2 };
        assert_eq!(immediate.delay_before(2), Some(Duration::ZERO));
        assert_eq!(immediate.delay_before(3), None);
        let exponential = RestartStrategy::Exponential {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_retries: 4,
        };
        let delays: Vec<_> = (1..=5).map(|n| exponential.delay_before(n)).collect();
        assert_eq!(
            delays,
            vec![
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(300)),
                Some(Duration::from_millis(300)),
                None
            ]
        );
    }
}
