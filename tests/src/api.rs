//! A `morpheus up --listen` or `morpheus serve` process under test and a small blocking
//! HTTP client for its API (real HTTP over loopback; nothing is mocked).

use std::process::Command;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use serde_json::Value;

use crate::devnet::free_port;
use crate::{wait_for, TestEnv, WorkerProcess};

/// A server process and where it listens.
pub struct ApiProcess {
    /// The process (killed when dropped).
    pub process: WorkerProcess,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    client: Client,
    token: Option<String>,
}

/// An answer: status, JSON body (`Null` when not JSON) and the request id header.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body as JSON.
    pub body: Value,
    /// `x-request-id`.
    pub request_id: Option<String>,
}

impl Answer {
    fn of(response: Response) -> Self {
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().unwrap_or_default();
        Self {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            request_id,
        }
    }

    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl ApiProcess {
    /// Spawns `morpheus <command> --listen 127.0.0.1:<free port> <args>` and waits until
    /// `/api/health` answers.
    pub fn spawn(
        env: &TestEnv,
        name: &str,
        command: &str,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut all = vec![command, "--listen", listen.as_str()];
        all.extend_from_slice(args);
        let process = env.spawn_process(name, &all, configure);
        let base = format!("http://{listen}");
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let health = format!("{base}/api/health");
        wait_for("the API to answer", Duration::from_secs(60), || {
            client
                .get(&health)
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        Self {
            process,
            base,
            client,
            token: None,
        }
    }

    /// Sends this bearer token from now on.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// The client, for requests the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Answer {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        Answer::of(request.send().expect("HTTP request"))
    }

    /// `GET base+path`.
    pub fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(format!("{}{path}", self.base)))
    }

    /// `POST base+path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
    }

    /// `POST base+path` with a raw body and content type.
    pub fn post_raw(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> Answer {
        self.send(
            self.client
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
    }

    /// `POST base+path` with a raw body on a connection of its own: for bodies the
    /// server refuses before reading them (413), after which it closes the connection,
    /// which must not be handed back to the shared pool.
    pub fn post_raw_alone(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> Answer {
        let client = Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let request = client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        self.send(request)
    }

    /// `POST base+path` with a JSON body and extra headers.
    pub fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request)
    }

    /// `PUT base+path` with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(self.client.put(format!("{}{path}", self.base)).json(body))
    }

    /// `DELETE base+path`.
    pub fn delete(&self, path: &str) -> Answer {
        self.send(self.client.delete(format!("{}{path}", self.base)))
    }

    /// Waits until run `id` has `status` (through the API).
    pub fn wait_for_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        wait_for(&format!("run {id} to be {status}"), timeout, || {
            let answer = self.get(&format!("/api/v1/runs/{id}"));
            (answer.body["status"] == status).then_some(answer.body)
        })
    }
}
