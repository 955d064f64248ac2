//! What the provider asks the Akash chain simulator, over its REST API (the node's
//! shapes: numbers as strings or numbers, ids nested under `id`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use url::Url;

/// A lease as the chain lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseId {
    /// The deployment owner.
    pub owner: String,
    /// Deployment sequence.
    pub dseq: u64,
    /// Group sequence.
    pub gseq: u32,
    /// Order sequence.
    pub oseq: u32,
    /// The provider.
    pub provider: String,
}

/// A lease and its state.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Which lease.
    pub id: LeaseId,
    /// `active` or `closed`.
    pub state: String,
}

/// What the provider needs of a deployment.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// `active` or `closed`.
    pub state: String,
    /// The manifest version the owner committed to, when the chain has one.
    pub hash: Option<Vec<u8>>,
    /// `(gseq, group name)` of its groups.
    pub groups: Vec<(u32, String)>,
}

/// A client of the chain simulator's REST API.
#[derive(Debug, Clone)]
pub struct ChainClient {
    base: Url,
    http: reqwest::Client,
}

fn number(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
}

impl ChainClient {
    /// A client of the chain at `base` (`http://127.0.0.1:26617`).
    pub fn new(base: Url) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("a plain HTTP client builds");
        Self { base, http }
    }

    /// The chain's REST URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Result<Url, String> {
        self.base
            .join(path)
            .map_err(|e| format!("cannot build a chain URL from {}: {e}", self.base))
    }

    /// GET `path` with `query`: `Ok(None)` on 404, the JSON body on 200.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Option<Value>, String> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("the chain at {} does not answer: {e}", self.base))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let text = response
            .text()
            .await
            .map_err(|e| format!("the chain's answer to {path} broke off: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "the chain answered {path} with {status}: {}",
                text.trim()
            ));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("the chain's answer to {path} is not JSON ({e})"))
    }

    /// The account's compressed secp256k1 public key (`account.pub_key.key`); `None`
    /// when the account is unknown or has never signed a transaction.
    pub async fn account_pub_key(&self, address: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(body) = self
            .get(&format!("/cosmos/auth/v1beta1/accounts/{address}"), &[])
            .await?
        else {
            return Ok(None);
        };
        match body["account"]["pub_key"]["key"].as_str() {
            Some(key) => BASE64
                .decode(key)
                .map(Some)
                .map_err(|_| format!("the chain's public key of {address} is not base64")),
            None => Ok(None),
        }
    }

    /// The leases of deployment `(owner, dseq)`, in every state.
    pub async fn leases(&self, owner: &str, dseq: u64) -> Result<Vec<Lease>, String> {
        let body = self
            .get(
                "/akash/market/v1beta5/leases/list",
                &[
                    ("filters.owner", owner.to_owned()),
                    ("filters.dseq", dseq.to_string()),
                ],
            )
            .await?
            .unwrap_or_else(|| json!({"leases": []}));
        let leases = body["leases"]
            .as_array()
            .ok_or("the chain's lease list has no leases array")?;
        leases
            .iter()
            .map(|entry| {
                let lease = &entry["lease"];
                let id = &lease["id"];
                let field = |name: &str| {
                    number(&id[name]).ok_or_else(|| format!("a listed lease has no id.{name}"))
                };
                Ok(Lease {
                    id: LeaseId {
                        owner: id["owner"].as_str().unwrap_or_default().to_owned(),
                        dseq: field("dseq")?,
                        gseq: field("gseq")? as u32,
                        oseq: field("oseq")? as u32,
                        provider: id["provider"].as_str().unwrap_or_default().to_owned(),
                    },
                    state: lease["state"].as_str().unwrap_or_default().to_owned(),
                })
            })
            .collect()
    }

    /// The deployment `(owner, dseq)`; `None` when the chain does not know it.
    pub async fn deployment(&self, owner: &str, dseq: u64) -> Result<Option<Deployment>, String> {
        let Some(body) = self
            .get(
                "/akash/deployment/v1beta4/deployments/info",
                &[
                    ("id.owner", owner.to_owned()),
                    ("id.dseq", dseq.to_string()),
                ],
            )
            .await?
        else {
            return Ok(None);
        };
        let deployment = &body["deployment"];
        let hash = match deployment["hash"].as_str().filter(|hash| !hash.is_empty()) {
            Some(hash) => Some(
                BASE64
                    .decode(hash)
                    .map_err(|_| format!("deployment {dseq}'s hash on chain is not base64"))?,
            ),
            None => None,
        };
        let groups = body["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|group| {
                let gseq = number(&group["id"]["gseq"])? as u32;
                let name = group["group_spec"]["name"].as_str()?.to_owned();
                Some((gseq, name))
            })
            .collect();
        Ok(Some(Deployment {
            state: deployment["state"].as_str().unwrap_or_default().to_owned(),
            hash,
            groups,
        }))
    }

    /// `POST /simulator/providers`: registers (or re-registers) this provider so the
    /// chain bids on its behalf.
    pub async fn register(&self, registration: &Value) -> Result<(), String> {
        let url = self.url("/simulator/providers")?;
        let response = self
            .http
            .post(url)
            .json(registration)
            .send()
            .await
            .map_err(|e| format!("the chain simulator at {} does not answer: {e}", self.base))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(format!(
            "the chain simulator at {} refused the provider registration ({status}): {}",
            self.base,
            text.trim()
        ))
    }
}
