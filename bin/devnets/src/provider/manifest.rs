//! The manifest a client `PUT`s, decoded and hashed with the simulator's own code: the
//! JSON array of groups Akash's SDK derives from an SDL (`[{"name", "services": [...]}]`),
//! of which the simulator reads what it runs (image, command, args, env, count,
//! exposed ports, volume mounts) and ignores the rest, and its version: SHA-256 of its
//! sorted JSON, which must equal the deployment's hash on chain.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One group of the manifest: the services of one placement, run on one lease.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Group {
    /// The placement's name (the chain's `group_spec.name`).
    pub name: String,
    /// Its services.
    pub services: Vec<Service>,
}

/// One service of a group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Service {
    /// The service's name.
    pub name: String,
    /// The image, as a registry reference (`127.0.0.1:5000/app@sha256:…`).
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Replaces the image's arguments.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// `KEY=value` entries.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Replicas.
    pub count: u32,
    /// Exposed ports.
    #[serde(default)]
    pub expose: Vec<Expose>,
    /// Volume mounts.
    #[serde(default)]
    pub params: Option<Params>,
}

/// One exposed port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Expose {
    /// The container port.
    pub port: u16,
    /// The port the SDL asked to expose it as (0: the same).
    #[serde(default)]
    pub external_port: u16,
    /// `TCP` or `UDP`.
    #[serde(default = "tcp")]
    pub proto: String,
    /// Reachable from outside the deployment: only these are published.
    #[serde(default)]
    pub global: bool,
}

fn tcp() -> String {
    "TCP".to_owned()
}

/// A service's `params`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Params {
    /// Volume mounts, `null` for none.
    #[serde(default)]
    pub storage: Option<Vec<StorageMount>>,
}

/// A volume mounted into a service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageMount {
    /// The volume's name (the same name in two services of a group is one volume).
    pub name: String,
    /// Where it is mounted (`/data`).
    #[serde(default)]
    pub mount: Option<String>,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
}

impl Service {
    /// The mounts that name a path.
    pub fn mounts(&self) -> impl Iterator<Item = (&str, &StorageMount)> {
        self.params
            .iter()
            .flat_map(|params| params.storage.iter().flatten())
            .filter_map(|mount| Some((mount.mount.as_deref()?, mount)))
    }

    /// The exposed ports that are published (global), one per port and protocol.
    pub fn published(&self) -> Vec<&Expose> {
        let mut seen = Vec::new();
        for expose in self.expose.iter().filter(|expose| expose.global) {
            if !seen
                .iter()
                .any(|known: &&Expose| known.port == expose.port && known.proto == expose.proto)
            {
                seen.push(expose);
            }
        }
        seen
    }
}

/// Decodes the body of `PUT /deployment/{dseq}/manifest`, checking what the simulator
/// relies on: service names usable in container names, a protocol it can publish.
pub fn decode(value: &Value) -> Result<Vec<Group>, String> {
    let groups: Vec<Group> = serde_json::from_value(value.clone())
        .map_err(|e| format!("the manifest is not an array of groups with services: {e}"))?;
    for group in &groups {
        for service in &group.services {
            let valid_name = !service.name.is_empty()
                && service
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name {
                return Err(format!(
                    "group '{}': service name '{}' must be letters, digits, '-' or '_'",
                    group.name, service.name
                ));
            }
            if let Some(expose) = service
                .expose
                .iter()
                .find(|expose| !matches!(expose.proto.as_str(), "TCP" | "UDP"))
            {
                return Err(format!(
                    "service '{}': proto '{}' is neither TCP nor UDP",
                    service.name, expose.proto
                ));
            }
            if service.image.trim().is_empty() {
                return Err(format!("service '{}' has no image", service.name));
            }
        }
    }
    Ok(groups)
}

/// `value` as the sorted JSON whose SHA-256 is a manifest's version: object keys in
/// UTF-16 code-unit order at every level (JavaScript's sort), no whitespace, strings
/// escaped as `JSON.stringify` escapes them, and `<`, `>`, `&` as `\u003c`, `\u003e`,
/// `\u0026` (Go's `encoding/json` habit, which the SDK reproduces).
pub fn sorted_json(value: &Value) -> String {
    let mut text = String::new();
    write_sorted(value, &mut text);
    text.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| utf16_order(a, b));
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_sorted(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn utf16_order(left: &str, right: &str) -> Ordering {
    left.encode_utf16().cmp(right.encode_utf16())
}

/// The manifest version of `value`: SHA-256 of [`sorted_json`].
pub fn version(value: &Value) -> [u8; 32] {
    Sha256::digest(sorted_json(value).as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_sort_by_code_unit_and_html_characters_are_escaped() {
        let value = json!([{"b": 1, "a": "<&>", "B": [true, null]}]);
        assert_eq!(
            sorted_json(&value),
            r#"[{"B":[true,null],"a":"\u003c\u0026\u003e","b":1}]"#
        );
    }

    #[test]
    fn decoding_reads_the_sdk_shape() {
        let groups = decode(&json!([{"name": "dc", "services": [{
            "name": "web", "image": "nginx", "command": null, "args": null,
            "env": ["A=1"], "count": 2, "credentials": null,
            "expose": [{"port": 80, "externalPort": 0, "proto": "TCP", "service": "",
                        "global": true, "hosts": null, "ip": "", "endpointSequenceNumber": 0,
                        "httpOptions": {}},
                       {"port": 81, "externalPort": 0, "proto": "TCP", "global": false}],
            "params": {"storage": [{"name": "data", "mount": "/data", "readOnly": false}]},
            "resources": {}
        }]}]))
        .unwrap();
        let web = &groups[0].services[0];
        assert_eq!(web.count, 2);
        assert_eq!(web.published().len(), 1);
        assert_eq!(web.mounts().next().unwrap().0, "/data");
        assert!(decode(
            &json!([{"name": "dc", "services": [{"name": "a b", "image": "x", "count": 1}]}])
        )
        .is_err());
    }
}
