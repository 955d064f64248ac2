//! The Akash provider **simulator** (`morpheus_devnets::provider`) driven over HTTP
//! and WebSocket on 127.0.0.1, with the chain simulator in-process beside it: the
//! deployments and leases are real transactions signed by the `cosmos` executor (the
//! client a deploy uses) and confirmed one block at a time, the provider JWTs are the
//! executor's own (`mint_provider_jwt`) or minted here by hand for the bad ones.
//!
//! What is checked: a manifest of the lease owner runs its services as containers
//! carrying the lease's labels, the lease status reports them ready with a URI that
//! serves the image's page, and sending the manifest again creates nothing; every
//! refusal (no, malformed, badly signed, expired or insufficient JWT; a manifest that
//! is not the deployment's hash on chain; no active lease with this provider; an image
//! that cannot be pulled) answers its status with a one-line `{"error"}` and runs
//! nothing; the lease logs WebSocket streams what the containers print (tail, follow)
//! and refuses a request without a valid JWT; closing the deployment on chain removes
//! the containers (the test hook and the watcher's own poll); every answer says
//! "simulator"; the faults armed through `/simulator/faults` act and clear.
//!
//! These tests need the **real Docker engine** (`docker info`) and the **registry at
//! 127.0.0.1:5000**: the provider pulls every image. Once per test process they build
//! `127.0.0.1:5000/morpheus-provider-test:latest` (`FROM scratch`, a static busybox
//! from `$MORPHEUS_TEST_BUSYBOX`, default `/bin/busybox`, and a page its `httpd`
//! serves on 8080) and push it with the docker CLI. Each test runs its own provider
//! (a fresh address) and removes every container labelled with that address when it
//! ends, also when it panics.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL};
use base64::Engine as _;
use futures::StreamExt;
use k256::ecdsa::signature::Signer as _;
use morpheus_engine::{ExecRequest, Executor, LeaseCheck, LogSink, StepError};
use morpheus_executors::cosmos::{
    mint_provider_jwt, CosmosConfig, CosmosExecutor, Gas, KeySource, Signer,
};
use morpheus_tests::docker::{
    containers_with_label, containers_with_labels, docker_ok, require_docker, ContainerGuard,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite;

use morpheus_devnets::akash::{serve, SimulatorHandle, SimulatorOptions};
use morpheus_devnets::provider::{
    start_provider, ProviderHandle, ProviderOptions, DSEQ_LABEL, PROVIDER_LABEL, SIMULATOR_NAME,
};

/// The image every test's services run, pulled by the provider from the registry.
const IMAGE: &str = "127.0.0.1:5000/morpheus-provider-test:latest";
/// An image the registry does not have.
const MISSING_IMAGE: &str = "127.0.0.1:5000/morpheus-provider-test-missing:latest";
/// The page the image's `httpd` serves at `/`.
const PAGE: &str = "morpheus provider simulator test page\n";
/// The header every answer of the provider simulator carries.
const SIMULATOR_HEADER: &str = "x-morpheus-simulator";

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run the docker CLI ({error}): these tests need it"))
}

/// Builds and pushes [`IMAGE`] once per test process.
fn test_image() -> &'static str {
    static PUSHED: OnceLock<()> = OnceLock::new();
    PUSHED.get_or_init(|| {
        require_docker();
        let busybox = std::env::var_os("MORPHEUS_TEST_BUSYBOX")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
        assert!(
            busybox.is_file(),
            "{} does not exist: install Debian's busybox-static or set MORPHEUS_TEST_BUSYBOX",
            busybox.display()
        );
        let context = tempfile::tempdir().unwrap();
        std::fs::copy(&busybox, context.path().join("busybox")).unwrap();
        std::fs::create_dir(context.path().join("www")).unwrap();
        std::fs::write(context.path().join("www/index.html"), PAGE).unwrap();
        std::fs::write(
            context.path().join("Dockerfile"),
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             COPY www /www\n\
             ENTRYPOINT [\"/bin/busybox\"]\n\
             CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        )
        .unwrap();
        let path = context.path().display().to_string();
        docker_ok(&["build", "-q", "-t", IMAGE, &path]);
        let pushed = docker(&["push", IMAGE]);
        assert!(
            pushed.status.success(),
            "docker push {IMAGE} failed (is the registry at 127.0.0.1:5000 up? curl 127.0.0.1:5000/v2/): {}",
            String::from_utf8_lossy(&pushed.stderr)
        );
    });
    IMAGE
}

// ---------------------------------------------------------------------------------
// Manifests and JWTs, made with this file's own code.

/// `value` as sorted JSON (keys in code-unit order at every level, no whitespace, and
/// `<`, `>`, `&` escaped as `\u003c`, `\u003e`, `\u0026`, as the SDK writes it): the
/// text whose SHA-256 is a manifest's version. The keys here are ASCII, so byte order
/// is the SDK's code-unit order.
fn sorted_json(value: &Value) -> String {
    sorted_unescaped(value)
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn sorted_unescaped(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|key| {
                    let key_json = Value::String(key.clone());
                    format!("{key_json}:{}", sorted_unescaped(&map[key]))
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(sorted_unescaped).collect();
            format!("[{}]", items.join(","))
        }
        scalar => scalar.to_string(),
    }
}

/// A manifest as the SDK derives it from a one-service SDL: group `group`, service
/// `web` of `image` exposing 8080 globally as 80, with `command`/`args` overrides.
struct Manifest {
    /// Its sorted JSON (what is sent).
    text: String,
    /// SHA-256 of `text`, hex: the deployment's hash on chain.
    hash_hex: String,
}

fn manifest_of(group: &str, image: &str, command: Option<Value>, args: Option<Value>) -> Manifest {
    let value = json!([{
        "name": group,
        "services": [{
            "name": "web",
            "image": image,
            "command": command,
            "args": args,
            "env": ["GREETING=hello"],
            "count": 1,
            "credentials": null,
            "params": null,
            "resources": {
                "id": 1,
                "cpu": {"units": {"val": "100"}},
                "memory": {"size": {"val": "134217728"}},
                "storage": [{"name": "default", "size": {"val": "134217728"}}],
                "gpu": {"units": {"val": "0"}},
                "endpoints": [{"sequence_number": 0}]
            },
            "expose": [{
                "port": 8080, "externalPort": 80, "proto": "TCP", "service": "",
                "global": true, "hosts": null, "ip": "", "endpointSequenceNumber": 0,
                "httpOptions": {"maxBodySize": 1048576, "readTimeout": 60000,
                                "sendTimeout": 60000, "nextTries": 3,
                                "nextTimeout": 0, "nextCases": ["error", "timeout"]}
            }]
        }]
    }]);
    let text = sorted_json(&value);
    let hash_hex = hex::encode(Sha256::digest(text.as_bytes()));
    Manifest { text, hash_hex }
}

/// The image as built: `httpd` serving the page.
fn web_manifest() -> Manifest {
    manifest_of("dc", test_image(), None, None)
}

/// The image's busybox printing two lines, then a tick every 0.2 s, while `httpd`
/// serves the page.
fn chatty_manifest() -> Manifest {
    let script = "echo hello-from-web; echo second line; \
                  (i=0; while true; do i=$((i+1)); echo tick-$i; /bin/busybox sleep 0.2; done) & \
                  exec /bin/busybox httpd -f -p 8080 -h /www";
    manifest_of(
        "dc",
        test_image(),
        Some(json!(["/bin/busybox"])),
        Some(json!(["sh", "-c", script])),
    )
}

/// A provider JWT minted by hand: `header`/`claims` as sorted JSON, signed with the
/// secp256k1 key `key_hex`, ADR-036 wrapped for `ES256KADR36` (signer `iss`), plain
/// over `header.payload` for `ES256K` (and any other `alg`).
fn hand_jwt(key_hex: &str, alg: &str, claims: &Value) -> String {
    let header = BASE64URL.encode(sorted_json(&json!({"alg": alg, "typ": "JWT"})));
    let payload = BASE64URL.encode(sorted_json(claims));
    let input = format!("{header}.{payload}");
    let signed: Vec<u8> = if alg == "ES256KADR36" {
        sorted_json(&json!({
            "account_number": "0",
            "chain_id": "",
            "fee": {"amount": [], "gas": "0"},
            "memo": "",
            "msgs": [{"type": "sign/MsgSignData",
                      "value": {"data": BASE64.encode(&input), "signer": claims["iss"]}}],
            "sequence": "0"
        }))
        .into_bytes()
    } else {
        input.clone().into_bytes()
    };
    let key = k256::ecdsa::SigningKey::from_slice(&hex::decode(key_hex).unwrap()).unwrap();
    let signature: k256::ecdsa::Signature = key.sign(&signed);
    format!("{input}.{}", BASE64URL.encode(signature.to_bytes()))
}

/// Claims for `iss` valid from a minute ago for five minutes, with `leases`.
fn claims(iss: &str, leases: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": iss, "iat": now - 60, "nbf": now - 60, "exp": now + 300,
           "version": "v1", "leases": leases})
}

// ---------------------------------------------------------------------------------
// The chain simulator, a provider simulator registered with it, and their owners.

/// A fresh key, its hex in a file the test keeps alive, and its address.
struct TestKey {
    _dir: tempfile::TempDir,
    source: KeySource,
    hex: String,
    address: String,
}

fn test_key(name: &str) -> TestKey {
    let hex = hex::encode(Sha256::digest(format!("morpheus provider test key {name}")));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.hex");
    std::fs::write(&path, &hex).unwrap();
    let address = Signer::from_hex(&hex, "akash")
        .unwrap()
        .address()
        .to_owned();
    TestKey {
        _dir: dir,
        source: KeySource::HexKeyFile(path),
        hex,
        address,
    }
}

/// A deployment owner: its key, and the executor signing with it.
struct Owner {
    key: TestKey,
    executor: CosmosExecutor,
}

impl Owner {
    fn signer(&self) -> Signer {
        Signer::from_hex(&self.key.hex, "akash").unwrap()
    }

    /// The real client's token (`mint_provider_jwt`, full access, five minutes).
    fn jwt(&self) -> String {
        self.executor.provider_jwt().unwrap()
    }
}

/// An answer of the provider simulator.
struct Answer {
    status: StatusCode,
    simulator_header: Option<String>,
    body: Value,
}

impl Answer {
    /// The one-line `{"error"}` of a refusal with `status`.
    fn refusal(&self, status: StatusCode) -> &str {
        assert_eq!(self.status, status, "{}", self.body);
        self.simulator_says();
        let object = self.body.as_object().expect("an error answer is an object");
        assert_eq!(object.len(), 1, "only an error: {}", self.body);
        let error = self.body["error"].as_str().expect("an error text");
        assert!(
            !error.is_empty() && !error.contains('\n'),
            "one line: {error:?}"
        );
        error
    }

    fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        self.simulator_says();
        &self.body
    }

    fn simulator_says(&self) {
        assert_eq!(
            self.simulator_header.as_deref(),
            Some(SIMULATOR_NAME),
            "every answer carries {SIMULATOR_HEADER}"
        );
    }
}

/// A chain simulator making blocks only when asked, and a provider simulator
/// registered with it (attribute `region=local`, bidding one block after an order
/// opens). Its containers are removed when it is dropped.
struct Net {
    chain: SimulatorHandle,
    provider: ProviderHandle,
    http: reqwest::Client,
    // Last: removes the containers after the provider has stopped.
    _containers: ContainerGuard,
}

impl Net {
    async fn start(poll_interval: Duration) -> Self {
        test_image();
        let chain = serve(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            SimulatorOptions {
                block_time: Duration::ZERO,
                ..SimulatorOptions::default()
            },
        )
        .await
        .unwrap();
        let mut options = ProviderOptions::new(chain.url().parse().unwrap());
        options.attributes = vec![("region".to_owned(), "local".to_owned())];
        options.bid_delay_blocks = 1;
        options.poll_interval = poll_interval;
        let provider = start_provider(TcpListener::bind("127.0.0.1:0").await.unwrap(), options)
            .await
            .unwrap();
        let containers = ContainerGuard::new(PROVIDER_LABEL, provider.address());
        Self {
            chain,
            provider,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            _containers: containers,
        }
    }

    /// A provider that only reaps when the test asks ([`ProviderHandle::reap_closed_leases`]).
    async fn without_watcher() -> Self {
        Self::start(Duration::from_secs(3600)).await
    }

    async fn chain_post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.chain.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().await.unwrap()
    }

    async fn chain_get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.chain.url()))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().await.unwrap()
    }

    async fn blocks(&self, count: u64) {
        self.chain_post("/simulator/blocks", json!({"count": count}))
            .await;
    }

    async fn leases(&self, owner: &str, dseq: u64) -> Vec<Value> {
        self.chain_get(&format!(
            "/akash/market/v1beta5/leases/list?filters.owner={owner}&filters.dseq={dseq}"
        ))
        .await["leases"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// A funded owner and its executor.
    async fn owner(&self, name: &str) -> Owner {
        let key = test_key(name);
        self.chain_post(
            "/simulator/accounts",
            json!({"address": key.address, "amount": "10000000"}),
        )
        .await;
        let mut config = CosmosConfig::new(self.chain.url(), &self.chain.options().chain_id);
        config.key = Some(key.source.clone());
        config.gas = Gas::Fixed(200_000);
        config.timeouts.confirm = Duration::from_secs(10);
        config.timeouts.confirm_poll = Duration::from_millis(10);
        config.timeouts.request = Duration::from_secs(10);
        config.timeouts.http_attempts = 3;
        let executor = CosmosExecutor::new(&config).unwrap();
        Owner { key, executor }
    }

    /// Signs `op` with the owner's key, broadcasts it, and confirms it in one block.
    async fn transact(&self, owner: &Owner, op: Value) -> Value {
        let signed = call(&owner.executor, op).await.unwrap();
        let executor = owner.executor.clone();
        let payload = json!({"op": "broadcast", "tx_bytes_b64": signed["tx_bytes_b64"]});
        let broadcast = tokio::spawn(async move { call(&executor, payload).await });
        while !broadcast.is_finished() {
            if self.chain_get("/simulator/ledger").await["mempool"]
                .as_u64()
                .unwrap()
                > 0
            {
                self.blocks(1).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let landed = broadcast.await.unwrap().unwrap();
        assert_eq!(landed["code"], 0, "{landed}");
        landed
    }

    /// Deployment `dseq` of `owner`: one group `dc` requiring `region`, committing to
    /// `hash_hex`.
    async fn deploy(&self, owner: &Owner, dseq: u64, region: &str, hash_hex: &str) {
        let groups = json!([{
            "name": "dc",
            "requirements": {"attributes": [{"key": "region", "value": region}],
                             "signedBy": {"allOf": [], "anyOf": []}},
            "resources": [{
                "resource": {"id": 1, "cpu": {"units": {"val": "100"}},
                             "memory": {"quantity": {"val": "134217728"}},
                             "storage": [{"name": "default", "quantity": {"val": "134217728"}}],
                             "gpu": {"units": {"val": "0"}},
                             "endpoints": [{"sequence_number": 0}]},
                "price": {"denom": "uakt", "amount": "100"},
                "count": 1
            }]
        }]);
        self.transact(
            owner,
            json!({"op": "sign_create_deployment", "dseq": dseq.to_string(), "groups": groups,
                   "hash_hex": hash_hex, "deposit": "500000uakt"}),
        )
        .await;
    }

    /// The provider's open bid on deployment `dseq` (one block after its order opened).
    async fn our_bid(&self, owner: &Owner, dseq: u64) -> Value {
        self.blocks(1).await;
        let bids = call(
            &owner.executor,
            json!({"op": "bids", "dseq": dseq.to_string(), "state": "open"}),
        )
        .await
        .unwrap();
        bids["bids"]
            .as_array()
            .unwrap()
            .iter()
            .find(|bid| bid["provider"] == self.provider.address())
            .cloned()
            .unwrap_or_else(|| panic!("the provider did not bid on {dseq}: {bids}"))
    }

    /// Deployment `dseq` committing to `manifest`, leased from this provider: answers
    /// `(gseq, oseq)`.
    async fn leased(&self, owner: &Owner, dseq: u64, manifest: &Manifest) -> (u64, u64) {
        self.deploy(owner, dseq, "local", &manifest.hash_hex).await;
        let bid = self.our_bid(owner, dseq).await;
        self.transact(
            owner,
            json!({"op": "sign_create_lease", "dseq": dseq.to_string(), "gseq": bid["gseq"],
                   "oseq": bid["oseq"], "provider": bid["provider"], "bseq": bid["bseq"]}),
        )
        .await;
        let leases = self.leases(&owner.key.address, dseq).await;
        assert_eq!(leases.len(), 1, "{leases:?}");
        assert_eq!(leases[0]["lease"]["state"], "active");
        (bid["gseq"].as_u64().unwrap(), bid["oseq"].as_u64().unwrap())
    }

    async fn close(&self, owner: &Owner, dseq: u64) {
        self.transact(
            owner,
            json!({"op": "sign_close_deployment", "dseq": dseq.to_string()}),
        )
        .await;
        let leases = self.leases(&owner.key.address, dseq).await;
        assert_eq!(leases[0]["lease"]["state"], "closed", "{leases:?}");
    }

    /// `method {provider}{path}` with `Authorization: <authorization>` if given.
    async fn provider_request(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<String>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.provider.url()));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let simulator_header = response
            .headers()
            .get(SIMULATOR_HEADER)
            .map(|value| value.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("the provider answered {status} with non-JSON: {text}"));
        Answer {
            status,
            simulator_header,
            body,
        }
    }

    async fn put_manifest(&self, token: Option<&str>, dseq: &str, body: &str) -> Answer {
        let authorization = token.map(|token| format!("Bearer {token}"));
        self.provider_request(
            reqwest::Method::PUT,
            &format!("/deployment/{dseq}/manifest"),
            authorization.as_deref(),
            Some(body.to_owned()),
        )
        .await
    }

    async fn lease_status(&self, token: Option<&str>, dseq: u64, gseq: u64, oseq: u64) -> Answer {
        let authorization = token.map(|token| format!("Bearer {token}"));
        self.provider_request(
            reqwest::Method::GET,
            &format!("/lease/{dseq}/{gseq}/{oseq}/status"),
            authorization.as_deref(),
            None,
        )
        .await
    }

    async fn provider_get(&self, path: &str) -> Answer {
        self.provider_request(reqwest::Method::GET, path, None, None)
            .await
    }

    async fn fault(&self, body: Value) -> Answer {
        self.provider_request(
            reqwest::Method::POST,
            "/simulator/faults",
            None,
            Some(body.to_string()),
        )
        .await
    }

    async fn clear_faults(&self) {
        let cleared = self
            .provider_request(reqwest::Method::DELETE, "/simulator/faults", None, None)
            .await;
        assert_eq!(cleared.ok(), &json!({"cleared": true}));
    }

    /// The ids of the containers carrying this provider's label.
    fn containers(&self) -> Vec<String> {
        containers_with_label(PROVIDER_LABEL, self.provider.address())
    }

    /// The ids of this provider's containers of deployment `dseq`.
    fn containers_of(&self, dseq: u64) -> Vec<String> {
        // One query: the lease watcher may remove containers between a listing and an
        // inspection of each.
        let dseq = dseq.to_string();
        let mut ids = containers_with_labels(&[
            (PROVIDER_LABEL, self.provider.address()),
            (DSEQ_LABEL, &dseq),
        ]);
        ids.sort();
        ids
    }

    /// `ws://{provider}/lease/{dseq}/{gseq}/{oseq}/logs?{query}` with the bearer token.
    async fn logs(
        &self,
        token: Option<&str>,
        (dseq, gseq, oseq): (u64, u64, u64),
        query: &str,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tungstenite::Error,
    > {
        let address = format!(
            "{}/lease/{dseq}/{gseq}/{oseq}/logs?{query}",
            self.provider.url().replacen("http://", "ws://", 1)
        );
        let mut request =
            tungstenite::client::IntoClientRequest::into_client_request(address.as_str()).unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(socket, _)| socket)
    }

    /// The log lines of a logs request that ends by itself (`follow=false`): every text
    /// message, parsed, until the provider closes the socket.
    async fn logs_until_closed(
        &self,
        token: &str,
        lease: (u64, u64, u64),
        query: &str,
    ) -> Vec<Value> {
        let mut socket = self.logs(Some(token), lease, query).await.unwrap();
        let mut lines = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let next = tokio::time::timeout_at(deadline, socket.next())
                .await
                .expect("a logs request without follow ends by itself");
            match next {
                Some(Ok(tungstenite::Message::Text(text))) => {
                    lines.push(serde_json::from_str::<Value>(text.as_str()).unwrap())
                }
                Some(Ok(tungstenite::Message::Close(_))) | None => return lines,
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("the log stream broke off: {error}"),
            }
        }
    }
}

async fn call(executor: &CosmosExecutor, payload: Value) -> Result<Value, StepError> {
    executor
        .call(ExecRequest {
            idempotency_key: "run-1/provider".to_owned(),
            attempt: 1,
            fencing_token: 1,
            lease: LeaseCheck::always(),
            deadline: Some(Instant::now() + Duration::from_secs(30)),
            payload,
            logs: LogSink::new(|_, _, _| {}),
        })
        .await
}

/// A container's labels.
fn labels(id: &str) -> Value {
    serde_json::from_str(&docker_ok(&[
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        id,
    ]))
    .unwrap()
}

/// A container's `Config.Image` and `State.Running`.
fn image_and_running(id: &str) -> (String, bool) {
    let text = docker_ok(&[
        "inspect",
        "--format",
        "{{.Config.Image}} {{.State.Running}}",
        id,
    ]);
    let (image, running) = text.trim().split_once(' ').unwrap();
    (image.to_owned(), running == "true")
}

/// `GET http://{uri}/` until it answers 200 (an `httpd` just started may not listen
/// yet), within 10 s: the body.
async fn page_at(uri: &str) -> String {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let outcome = client.get(format!("http://{uri}/")).send().await;
        match outcome {
            Ok(response) if response.status() == StatusCode::OK => {
                return response.text().await.unwrap()
            }
            other => assert!(
                Instant::now() < deadline,
                "http://{uri}/ does not answer the page: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (≤ 10 s) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn the_owners_manifest_runs_the_lease_ready_at_its_uri_and_sending_it_again_changes_nothing()
{
    let net = Net::without_watcher().await;
    let owner = net.owner("happy").await;
    let manifest = web_manifest();
    let (gseq, oseq) = net.leased(&owner, 101, &manifest).await;
    assert_eq!((gseq, oseq), (1, 1));
    // Nothing runs before the manifest; the status says so.
    let token = owner.jwt();
    let before = net.lease_status(Some(&token), 101, gseq, oseq).await;
    assert!(
        before
            .refusal(StatusCode::NOT_FOUND)
            .contains("no manifest has been deployed for lease 101/1/1"),
        "{}",
        before.body
    );

    let sent = net.put_manifest(Some(&token), "101", &manifest.text).await;
    assert_eq!(
        sent.ok(),
        &json!({
            "dseq": "101",
            "manifest_version": manifest.hash_hex,
            "changed": true,
            "leases": [{"gseq": 1, "oseq": 1, "group": "dc", "created": 1, "kept": 0}],
        })
    );
    let containers = net.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    let id = &containers[0];
    let on_container = labels(id);
    for (key, value) in [
        (PROVIDER_LABEL, net.provider.address()),
        ("akash.owner", owner.key.address.as_str()),
        (DSEQ_LABEL, "101"),
        ("akash.gseq", "1"),
        ("akash.oseq", "1"),
        ("akash.service", "web"),
        ("akash.replica", "0"),
        ("akash.manifest-version", manifest.hash_hex.as_str()),
    ] {
        assert_eq!(on_container[key], value, "label {key}: {on_container}");
    }
    assert_eq!(image_and_running(id), (IMAGE.to_owned(), true));

    // The status: ready, with a URI on 127.0.0.1 that serves the image's page.
    let status = net.lease_status(Some(&token), 101, gseq, oseq).await;
    let web = &status.ok()["services"]["web"];
    assert_eq!(web["name"], "web");
    assert_eq!(web["available"], 1, "{}", status.body);
    assert_eq!(web["total"], 1);
    assert_eq!(web["ready_replicas"], 1);
    assert_eq!(web["available_replicas"], 1);
    let uris = web["uris"].as_array().unwrap();
    assert_eq!(uris.len(), 1, "{web}");
    let uri = uris[0].as_str().unwrap();
    let port: u16 = uri
        .strip_prefix("127.0.0.1:")
        .unwrap_or_else(|| panic!("a URI on 127.0.0.1: {uri}"))
        .parse()
        .unwrap();
    assert_eq!(
        status.body["forwarded_ports"]["web"],
        json!([{"host": "127.0.0.1", "port": 8080, "externalPort": port, "proto": "TCP", "name": "web"}])
    );
    assert_eq!(page_at(uri).await, PAGE);
    // The real client reads the same status as ready.
    let read = call(
        &owner.executor,
        json!({"op": "lease_status", "host_uri": net.provider.url(), "dseq": "101",
               "gseq": gseq, "oseq": oseq}),
    )
    .await
    .unwrap();
    assert_eq!(read["ready"], true, "{read}");
    assert_eq!(read["services"]["web"]["uris"], json!([uri]));

    // The same manifest again, through the real client, then by hand: harmless.
    let again = call(
        &owner.executor,
        json!({"op": "send_manifest", "host_uri": net.provider.url(), "dseq": "101",
               "manifest_json": manifest.text}),
    )
    .await
    .unwrap();
    assert_eq!(again["status"], 200, "{again}");
    let third = net.put_manifest(Some(&token), "101", &manifest.text).await;
    assert_eq!(third.ok()["changed"], false);
    assert_eq!(
        third.body["leases"],
        json!([{"gseq": 1, "oseq": 1, "group": "dc", "created": 0, "kept": 1}])
    );
    assert_eq!(net.containers(), containers, "no container created again");
    assert_eq!(image_and_running(id), (IMAGE.to_owned(), true));
    let status = net.lease_status(Some(&token), 101, gseq, oseq).await;
    assert_eq!(status.ok()["services"]["web"]["uris"], json!([uri]));
    assert_eq!(page_at(uri).await, PAGE);
    // `/status` lists the lease it runs.
    let provider_status = net.provider_get("/status").await;
    assert_eq!(
        provider_status.ok()["leases"],
        json!([{"owner": owner.key.address, "dseq": "101", "gseq": 1, "oseq": 1}])
    );
}

#[tokio::test]
async fn tokens_that_are_missing_malformed_badly_signed_expired_or_not_the_owners_are_refused() {
    let net = Net::without_watcher().await;
    let owner = net.owner("jwt-owner").await;
    let manifest = web_manifest();
    let (gseq, oseq) = net.leased(&owner, 7, &manifest).await;
    let owner_address = owner.key.address.clone();
    // A stranger whose key the chain knows (it signed a deployment of its own), and
    // one it never saw sign anything.
    let stranger = net.owner("jwt-stranger").await;
    net.deploy(&stranger, 70, "nowhere", &manifest.hash_hex)
        .await;
    let unseen = test_key("jwt-unseen");
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let bearer = |token: &str| format!("Bearer {token}");
    let cases: Vec<(&str, Option<String>, StatusCode, String)> = vec![
        (
            "no Authorization",
            None,
            StatusCode::UNAUTHORIZED,
            "missing 'Authorization: Bearer <provider JWT>'".into(),
        ),
        (
            "not a bearer token",
            Some(format!("Basic {}", BASE64.encode("owner:secret"))),
            StatusCode::UNAUTHORIZED,
            "missing 'Authorization: Bearer <provider JWT>'".into(),
        ),
        (
            "not a JWT",
            Some(bearer("not-a-jwt")),
            StatusCode::UNAUTHORIZED,
            "malformed provider JWT: not three dot-separated parts".into(),
        ),
        (
            "parts that are not base64url JSON",
            Some(bearer("a.b.c")),
            StatusCode::UNAUTHORIZED,
            "malformed provider JWT: the header is not base64url".into(),
        ),
        (
            "claims without leases",
            Some(bearer(&hand_jwt(
                &owner.key.hex,
                "ES256KADR36",
                &json!({"iss": owner_address, "iat": 1, "nbf": 1, "exp": 4_000_000_000u64, "version": "v1"}),
            ))),
            StatusCode::UNAUTHORIZED,
            "malformed provider JWT: the claims need iss".into(),
        ),
        (
            "an algorithm it does not accept",
            Some(bearer(&hand_jwt(
                &owner.key.hex,
                "HS256",
                &claims(&owner_address, json!({"access": "full"})),
            ))),
            StatusCode::UNAUTHORIZED,
            "provider JWT alg 'HS256' is not accepted".into(),
        ),
        (
            "the owner as issuer, signed by the stranger's key",
            Some(bearer(&hand_jwt(
                &stranger.key.hex,
                "ES256KADR36",
                &claims(&owner_address, json!({"access": "full"})),
            ))),
            StatusCode::UNAUTHORIZED,
            "provider JWT signature does not verify against the issuer's public key on chain"
                .into(),
        ),
        (
            "plain ES256K signed by the stranger's key",
            Some(bearer(&hand_jwt(
                &stranger.key.hex,
                "ES256K",
                &claims(&owner_address, json!({"access": "full"})),
            ))),
            StatusCode::UNAUTHORIZED,
            "provider JWT signature does not verify".into(),
        ),
        (
            "an issuer with no key on chain",
            Some(bearer(&mint_provider_jwt(
                &Signer::from_hex(&unseen.hex, "akash").unwrap(),
                now,
                hour,
            ))),
            StatusCode::UNAUTHORIZED,
            format!(
                "the JWT issuer {} has no public key on chain",
                unseen.address
            ),
        ),
        (
            "expired an hour ago",
            Some(bearer(&mint_provider_jwt(
                &owner.signer(),
                now - 2 * hour,
                hour,
            ))),
            StatusCode::UNAUTHORIZED,
            "provider JWT expired at".into(),
        ),
        (
            "valid only from an hour on",
            Some(bearer(&mint_provider_jwt(
                &owner.signer(),
                now + hour,
                hour,
            ))),
            StatusCode::UNAUTHORIZED,
            "provider JWT is not valid before".into(),
        ),
        (
            "the owner's token scoped to status only",
            Some(bearer(&hand_jwt(
                &owner.key.hex,
                "ES256KADR36",
                &claims(
                    &owner_address,
                    json!({"access": "scoped", "scope": ["status"]}),
                ),
            ))),
            StatusCode::FORBIDDEN,
            "provider JWT does not permit this: leases grants no 'send-manifest' on deployment 7"
                .into(),
        ),
        (
            "the stranger's own valid token",
            Some(bearer(&stranger.jwt())),
            StatusCode::FORBIDDEN,
            format!(
                "{} has no active lease for deployment 7 with provider {}",
                stranger.key.address,
                net.provider.address()
            ),
        ),
    ];
    for (case, authorization, status, expected) in cases {
        let answer = net
            .provider_request(
                reqwest::Method::PUT,
                "/deployment/7/manifest",
                authorization.as_deref(),
                Some(manifest.text.clone()),
            )
            .await;
        let error = answer.refusal(status);
        assert!(error.contains(&expected), "{case}: {error}");
        assert!(
            net.containers().is_empty(),
            "{case}: a refusal ran something"
        );
    }
    // The lease status checks the same: none, and an expired one, are refused.
    let none = net.lease_status(None, 7, gseq, oseq).await;
    none.refusal(StatusCode::UNAUTHORIZED);
    let expired = mint_provider_jwt(&owner.signer(), now - 2 * hour, hour);
    let answer = net.lease_status(Some(&expired), 7, gseq, oseq).await;
    assert!(answer.refusal(StatusCode::UNAUTHORIZED).contains("expired"));

    // The hand minting is right: the owner's own key passes both algorithms (the
    // status answers 404 since nothing runs yet, past every check of the token).
    for alg in ["ES256KADR36", "ES256K"] {
        let token = hand_jwt(
            &owner.key.hex,
            alg,
            &claims(&owner_address, json!({"access": "full"})),
        );
        let answer = net.lease_status(Some(&token), 7, gseq, oseq).await;
        assert!(
            answer
                .refusal(StatusCode::NOT_FOUND)
                .contains("no manifest has been deployed"),
            "{alg}: {}",
            answer.body
        );
    }
    // A status-scoped token reads the status but sends no manifest (checked above).
    let scoped = hand_jwt(
        &owner.key.hex,
        "ES256KADR36",
        &claims(
            &owner_address,
            json!({"access": "scoped", "scope": ["status"]}),
        ),
    );
    net.lease_status(Some(&scoped), 7, gseq, oseq)
        .await
        .refusal(StatusCode::NOT_FOUND);
    assert!(net.containers().is_empty());
    // And the owner's real token is accepted: the refusals were about the tokens.
    let sent = net
        .put_manifest(Some(&owner.jwt()), "7", &manifest.text)
        .await;
    assert_eq!(sent.ok()["changed"], true);
    assert_eq!(net.containers().len(), 1);
}

#[tokio::test]
async fn manifests_that_do_not_match_the_chain_or_have_no_lease_here_are_refused() {
    let net = Net::without_watcher().await;
    let owner = net.owner("manifest-owner").await;
    let token = owner.jwt();
    let manifest = web_manifest();
    net.leased(&owner, 5, &manifest).await;
    let refused = |answer: Answer, status: StatusCode, expected: &str| {
        let error = answer.refusal(status).to_owned();
        assert!(error.contains(expected), "{error}");
        assert!(net.containers().is_empty(), "a refusal ran something");
        error
    };

    // Another manifest than the one committed on chain.
    let other = manifest_of(
        "dc",
        test_image(),
        None,
        Some(json!(["httpd", "-f", "-p", "8081"])),
    );
    let error = refused(
        net.put_manifest(Some(&token), "5", &other.text).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        &format!(
            "manifest version {} does not match deployment 5's hash on chain {}",
            other.hash_hex, manifest.hash_hex
        ),
    );
    assert!(!error.contains(&manifest.text), "{error}");
    // The right manifest with a single changed byte (whitespace is not a change: the
    // version is of its sorted JSON, not of the text).
    let spaced =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&manifest.text).unwrap())
            .unwrap();
    let tampered = manifest.text.replace("GREETING=hello", "GREETING=hellO");
    refused(
        net.put_manifest(Some(&token), "5", &tampered).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "does not match deployment 5's hash on chain",
    );
    refused(
        net.put_manifest(Some(&token), "5", "{not json").await,
        StatusCode::BAD_REQUEST,
        "the manifest is not JSON",
    );
    refused(
        net.put_manifest(Some(&token), "five", &manifest.text).await,
        StatusCode::BAD_REQUEST,
        "dseq 'five' is not a whole number",
    );

    // A deployment with the provider's bid but no lease, and one the chain never saw.
    net.deploy(&owner, 6, "local", &manifest.hash_hex).await;
    net.our_bid(&owner, 6).await;
    for dseq in ["6", "9"] {
        refused(
            net.put_manifest(Some(&token), dseq, &manifest.text).await,
            StatusCode::FORBIDDEN,
            &format!(
                "{} has no active lease for deployment {dseq} with provider {}",
                owner.key.address,
                net.provider.address()
            ),
        );
    }

    // The committed manifest, but its group is not the chain's group `dc`.
    let renamed = manifest_of("elsewhere", test_image(), None, None);
    net.leased(&owner, 8, &renamed).await;
    refused(
        net.put_manifest(Some(&token), "8", &renamed.text).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the manifest has no group 'dc' for lease gseq 1",
    );
    // The committed manifest, but its image is not in the registry.
    let missing = manifest_of("dc", MISSING_IMAGE, None, None);
    net.leased(&owner, 10, &missing).await;
    refused(
        net.put_manifest(Some(&token), "10", &missing.text).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        &format!("cannot pull image '{MISSING_IMAGE}'"),
    );

    // The committed manifest of deployment 5, pretty-printed, is accepted.
    let sent = net.put_manifest(Some(&token), "5", &spaced).await;
    assert_eq!(sent.ok()["manifest_version"], manifest.hash_hex.as_str());
    assert_eq!(net.containers_of(5).len(), 1);
    assert_eq!(net.containers().len(), 1);
}

#[tokio::test]
async fn the_logs_websocket_streams_what_the_container_prints_to_the_owner_only() {
    let net = Net::without_watcher().await;
    let owner = net.owner("logs-owner").await;
    let manifest = chatty_manifest();
    // Its script's `&` is escaped in the text, as the SDK escapes it: the hash is of that.
    assert!(
        manifest.text.contains(r"done) \u0026 exec"),
        "{}",
        manifest.text
    );
    let (gseq, oseq) = net.leased(&owner, 12, &manifest).await;
    let lease = (12, gseq, oseq);
    let token = owner.jwt();
    let sent = net.put_manifest(Some(&token), "12", &manifest.text).await;
    assert_eq!(sent.ok()["changed"], true);

    // Everything so far, then the socket closes (no follow).
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines.len() < 3 {
        assert!(Instant::now() < deadline, "the container printed {lines:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        lines = net
            .logs_until_closed(&token, lease, "follow=false&tail=-1")
            .await;
    }
    assert_eq!(
        lines[0],
        json!({"name": "web-0", "message": "hello-from-web"})
    );
    assert_eq!(lines[1], json!({"name": "web-0", "message": "second line"}));
    assert_eq!(lines[2], json!({"name": "web-0", "message": "tick-1"}));
    assert!(
        lines.iter().all(|line| line["name"] == "web-0"),
        "{lines:?}"
    );
    // The last line only.
    let last = net.logs_until_closed(&token, lease, "tail=1").await;
    assert_eq!(last.len(), 1, "{last:?}");
    assert!(
        last[0]["message"].as_str().unwrap().starts_with("tick-"),
        "{last:?}"
    );

    // Following with no history: only lines printed from now on, as they come.
    let mut socket = net
        .logs(Some(&token), lease, "follow=true&tail=0")
        .await
        .unwrap();
    let mut ticks: Vec<u64> = Vec::new();
    while ticks.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a followed log keeps delivering lines")
            .expect("the followed stream stays open")
            .unwrap();
        let tungstenite::Message::Text(text) = message else {
            continue;
        };
        let line: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(line["name"], "web-0");
        let message = line["message"].as_str().unwrap();
        let tick = message
            .strip_prefix("tick-")
            .unwrap_or_else(|| panic!("only new lines with tail=0: {message}"));
        ticks.push(tick.parse().unwrap());
    }
    assert!(
        ticks.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{ticks:?}"
    );
    assert!(ticks[0] > 1, "the first tick was printed before: {ticks:?}");
    socket.close(None).await.unwrap();

    // Refused: no token, an expired token of the owner, a token of a stranger the
    // chain knows, a bad tail.
    let stranger = net.owner("logs-stranger").await;
    net.deploy(&stranger, 1, "nowhere", &manifest.hash_hex)
        .await;
    let expired = mint_provider_jwt(
        &owner.signer(),
        SystemTime::now() - Duration::from_secs(7200),
        Duration::from_secs(60),
    );
    let stranger_token = stranger.jwt();
    for (case, token, query, status) in [
        ("no token", None, "follow=true", 401),
        ("expired", Some(expired.as_str()), "follow=true", 401),
        (
            "stranger",
            Some(stranger_token.as_str()),
            "follow=true",
            403,
        ),
        ("bad tail", Some(token.as_str()), "tail=many", 400),
    ] {
        match net.logs(token, lease, query).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{case}");
                assert_eq!(
                    response.headers()[SIMULATOR_HEADER],
                    SIMULATOR_NAME,
                    "{case}"
                );
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                let error = body["error"].as_str().unwrap();
                assert!(!error.contains('\n'), "{case}: {error}");
            }
            Err(other) => panic!("{case}: not an HTTP refusal: {other}"),
            Ok(_) => panic!("{case}: the logs were served"),
        }
    }
}

#[tokio::test]
async fn closing_the_deployment_on_chain_removes_its_containers() {
    let net = Net::without_watcher().await;
    let owner = net.owner("close-owner").await;
    let manifest = web_manifest();
    let (gseq, oseq) = net.leased(&owner, 31, &manifest).await;
    let token = owner.jwt();
    net.put_manifest(Some(&token), "31", &manifest.text)
        .await
        .ok();
    assert_eq!(net.containers().len(), 1);
    // An active lease is not reaped.
    assert_eq!(net.provider.reap_closed_leases().await, Ok(0));
    assert_eq!(net.containers().len(), 1);

    net.close(&owner, 31).await;
    assert_eq!(net.provider.reap_closed_leases().await, Ok(1));
    assert!(net.containers().is_empty(), "{:?}", net.containers());
    assert_eq!(net.provider.reap_closed_leases().await, Ok(0));
    let status = net.provider_get("/status").await;
    assert_eq!(status.ok()["leases"], json!([]));
    // The closed deployment takes no manifest and has no status any more.
    let again = net.put_manifest(Some(&token), "31", &manifest.text).await;
    assert!(
        again
            .refusal(StatusCode::FORBIDDEN)
            .contains("has no active lease for deployment 31"),
        "{}",
        again.body
    );
    assert!(net.containers().is_empty());
    net.lease_status(Some(&token), 31, gseq, oseq)
        .await
        .refusal(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_lease_watcher_removes_the_containers_of_closed_leases_only() {
    let net = Net::start(Duration::from_millis(200)).await;
    let owner = net.owner("watch-owner").await;
    let manifest = web_manifest();
    let token = owner.jwt();
    for dseq in [41, 42] {
        net.leased(&owner, dseq, &manifest).await;
        net.put_manifest(Some(&token), &dseq.to_string(), &manifest.text)
            .await
            .ok();
    }
    let kept = net.containers_of(42);
    assert_eq!(net.containers_of(41).len(), 1);
    assert_eq!(kept.len(), 1);

    net.close(&owner, 41).await;
    eventually("the watcher removes deployment 41's container", || {
        net.containers_of(41).is_empty()
    })
    .await;
    // Several polls later the active lease's container is still there, running.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(net.containers_of(42), kept);
    assert_eq!(image_and_running(&kept[0]), (IMAGE.to_owned(), true));
    assert_eq!(net.containers().len(), 1);
}

#[tokio::test]
async fn status_and_every_answer_say_it_is_a_simulator() {
    let net = Net::without_watcher().await;
    let status = net.provider_get("/status").await;
    let body = status.ok();
    assert_eq!(body["simulator"], SIMULATOR_NAME);
    assert_eq!(SIMULATOR_NAME, "akash-provider");
    assert!(
        body["note"].as_str().unwrap().contains("SIMULATOR"),
        "{body}"
    );
    assert_eq!(body["address"], net.provider.address());
    assert_eq!(body["host_uri"], net.provider.url().as_str());
    assert_eq!(body["chain"], format!("{}/", net.chain.url()).as_str());
    assert_eq!(body["leases"], json!([]));
    assert_eq!(body["faults"], json!([]));
    let address = net.provider_get("/address").await;
    assert_eq!(
        address.ok(),
        &json!({"address": net.provider.address(), "simulator": SIMULATOR_NAME})
    );
    // An unknown route: a one-line 404 that names the simulator, with the header.
    let unknown = net.provider_get("/version").await;
    assert_eq!(
        unknown.refusal(StatusCode::NOT_FOUND),
        "GET /version is not served by the Akash provider simulator"
    );
    let banner = net.provider.banner();
    assert!(banner.starts_with("Akash provider SIMULATOR"), "{banner}");
    assert!(banner.contains(net.provider.address()), "{banner}");
    assert_eq!(net.provider.host_uri(), net.provider.url());

    // The chain knows it as a provider at its URL, so a deploy finds it there.
    let owner = net.owner("status-reader").await;
    let listed = call(
        &owner.executor,
        json!({"op": "provider", "address": net.provider.address()}),
    )
    .await
    .unwrap();
    assert_eq!(
        listed,
        json!({"address": net.provider.address(), "host_uri": net.provider.url(),
               "attributes": [{"key": "region", "value": "local"}]})
    );
}

#[tokio::test]
async fn armed_faults_refuse_manifests_and_hold_readiness_until_cleared() {
    let net = Net::without_watcher().await;
    let owner = net.owner("faults-owner").await;
    let manifest = web_manifest();
    let (gseq, oseq) = net.leased(&owner, 51, &manifest).await;
    let token = owner.jwt();
    let client_status = || {
        call(
            &owner.executor,
            json!({"op": "lease_status", "host_uri": net.provider.url(), "dseq": "51",
                   "gseq": gseq, "oseq": oseq}),
        )
    };

    // Faults it does not know, or a status that is not an error, are refused.
    for (bad, expected) in [
        (json!({"kind": "explode"}), "unknown fault kind 'explode'"),
        (
            json!({"kind": "refuse_manifest", "status": 200}),
            "refuse_manifest status 200 is not an error status",
        ),
        (json!({"kind": "never_ready", "for": "ever"}), "a fault is"),
    ] {
        let answer = net.fault(bad).await;
        let error = answer.refusal(StatusCode::BAD_REQUEST);
        assert!(error.contains(expected), "{error}");
    }
    assert_eq!(net.provider_get("/status").await.ok()["faults"], json!([]));

    // refuse_manifest with 422: the manifest is refused, by hand and to the client.
    let armed = net
        .fault(json!({"kind": "refuse_manifest", "status": 422}))
        .await;
    assert_eq!(armed.ok(), &json!({"armed": "refuse_manifest"}));
    assert_eq!(
        net.provider_get("/status").await.ok()["faults"],
        json!([{"kind": "refuse_manifest", "status": 422}])
    );
    let refused = net.put_manifest(Some(&token), "51", &manifest.text).await;
    assert!(
        refused
            .refusal(StatusCode::UNPROCESSABLE_ENTITY)
            .contains("refuses the manifest for deployment 51 (fault refuse_manifest"),
        "{}",
        refused.body
    );
    let error = call(
        &owner.executor,
        json!({"op": "send_manifest", "host_uri": net.provider.url(), "dseq": "51",
               "manifest_json": manifest.text}),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, StepError::Permanent(_)), "{error:?}");
    assert!(error.message().contains("HTTP 422"), "{}", error.message());
    assert!(net.containers().is_empty());
    // Without a status it refuses with 400; a token is still checked first.
    net.fault(json!({"kind": "refuse_manifest"})).await.ok();
    net.put_manifest(Some(&token), "51", &manifest.text)
        .await
        .refusal(StatusCode::BAD_REQUEST);
    net.put_manifest(None, "51", &manifest.text)
        .await
        .refusal(StatusCode::UNAUTHORIZED);
    assert!(net.containers().is_empty());

    net.clear_faults().await;
    assert_eq!(net.provider_get("/status").await.ok()["faults"], json!([]));
    let sent = net.put_manifest(Some(&token), "51", &manifest.text).await;
    assert_eq!(sent.ok()["changed"], true);
    assert_eq!(net.containers().len(), 1);
    let ready = client_status().await.unwrap();
    assert_eq!(ready["ready"], true, "{ready}");

    // never_ready: the running service is reported not ready, until cleared.
    let armed = net.fault(json!({"kind": "never_ready"})).await;
    assert_eq!(armed.ok(), &json!({"armed": "never_ready"}));
    assert_eq!(
        net.provider_get("/status").await.ok()["faults"],
        json!([{"kind": "never_ready"}])
    );
    let status = net.lease_status(Some(&token), 51, gseq, oseq).await;
    let web = &status.ok()["services"]["web"];
    assert_eq!(web["available"], 0, "{web}");
    assert_eq!(web["ready_replicas"], 0, "{web}");
    assert_eq!(web["available_replicas"], 0, "{web}");
    assert_eq!(web["total"], 1, "{web}");
    let held = client_status().await.unwrap();
    assert_eq!(held["ready"], false, "{held}");
    // The container itself is not touched.
    let id = &net.containers()[0];
    assert_eq!(image_and_running(id), (IMAGE.to_owned(), true));

    net.clear_faults().await;
    let status = net.lease_status(Some(&token), 51, gseq, oseq).await;
    assert_eq!(status.ok()["services"]["web"]["available"], 1);
    let ready = client_status().await.unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
}
