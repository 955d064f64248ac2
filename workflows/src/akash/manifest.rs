//! SDL → what Akash derives from it: the manifest (the groups and services a provider
//! receives), its sorted JSON, its version hash, and the deployment's groups
//! (`GroupSpec`s, what `MsgCreateDeployment` carries).
//!
//! The rules are those of Akash's TypeScript SDK (`@akashnetwork/chain-sdk`, its `SDL`
//! class with the `beta3` network version, pinned in `tests/sdl-judge`), which
//! `workflows/tests/sdl_sdk.rs` runs beside this code on the same SDLs. Where that SDK
//! has quirks they are followed, because the version hash must match byte for byte:
//!
//! - services are ordered with `localeCompare` ([`locale_compare`]); CPU and memory
//!   attributes in the manifest with plain code-unit order, in the groups with
//!   `localeCompare`;
//! - sizes (`512Mi`, `1G`) become bytes rounded up; CPU becomes millicores;
//! - an IP endpoint's sequence number is its position among the sorted IPs of the
//!   last expose that names it;
//! - a manifest group takes its services' resource ids from the group at the same
//!   position among the groups sorted by name;
//! - a service whose compute profile an earlier service of the placement already uses
//!   gets a resource of its own when that earlier resource is the group's first, and
//!   makes the SDK throw otherwise (here: an error); a service without `expose` makes
//!   it throw too (here: it does not parse).

use std::cmp::Ordering;
use std::collections::HashMap;

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::sdl::{
    js_number, js_to_string, ComputeResources, Expose, HttpOptions, Sdl, Service,
    ServicePermissions,
};

/// What cannot be derived from an SDL (the SDK would reject or throw on it too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A field's value cannot be used; the message names the field.
    #[error("{field}: {message}")]
    Invalid {
        /// Where (`profiles.compute.web.resources.memory.size`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// One group of the manifest: the services deployed in one placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestGroup {
    /// The placement's name.
    pub name: String,
    /// Its services, by name.
    pub services: Vec<ManifestService>,
}

/// One service as the provider receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestService {
    /// The service's name.
    pub name: String,
    /// The image.
    pub image: String,
    /// The entrypoint override.
    pub command: Option<Vec<String>>,
    /// The arguments override.
    pub args: Option<Vec<String>>,
    /// `KEY=value` entries.
    pub env: Option<Vec<String>>,
    /// The resources of one replica, with the id of its group resource.
    pub resources: ManifestResources,
    /// Replicas.
    pub count: u64,
    /// The exposed ports, sorted.
    pub expose: Vec<ManifestExpose>,
    /// Mounts and permissions, when the SDL has `params`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<ManifestParams>,
    /// Registry credentials.
    pub credentials: Option<ManifestCredentials>,
}

/// The resources of one manifest service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestResources {
    /// The id of the group resource this service runs under.
    pub id: u64,
    /// Millicores.
    pub cpu: CpuUnits,
    /// Bytes.
    pub memory: SizedUnits,
    /// Volumes, bytes each.
    pub storage: Vec<NamedSizedUnits>,
    /// GPUs.
    pub gpu: CpuUnits,
    /// The endpoints the service needs from the provider.
    pub endpoints: Vec<Endpoint>,
}

/// A count (millicores, GPUs) with attributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuUnits {
    /// The count as decimal text.
    pub units: ResourceValue,
    /// Attributes, when the SDL gives any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<Attribute>>,
}

/// A quantity as the manifest names it (`size`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizedUnits {
    /// Bytes as decimal text.
    pub size: ResourceValue,
    /// Attributes, when the SDL gives any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<Attribute>>,
}

/// A named volume as the manifest names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedSizedUnits {
    /// The volume's name (`default` for the root filesystem).
    pub name: String,
    /// Bytes as decimal text.
    pub size: ResourceValue,
    /// Attributes, when the SDL gives any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<Attribute>>,
}

/// A resource amount: on chain the bytes of its decimal text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceValue {
    /// The decimal text.
    pub val: String,
}

impl ResourceValue {
    fn new(val: String) -> ResourceValue {
        ResourceValue { val }
    }
}

/// A key/value attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attribute {
    /// The key.
    pub key: String,
    /// The value, as text.
    pub value: String,
}

/// What kind of endpoint a service needs from the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// The provider's shared HTTP ingress (a global TCP port 80).
    SharedHttp,
    /// A random port on the provider's address.
    RandomPort,
    /// A leased IP address.
    LeasedIp,
}

impl EndpointKind {
    fn number(self) -> u8 {
        match self {
            EndpointKind::SharedHttp => 0,
            EndpointKind::RandomPort => 1,
            EndpointKind::LeasedIp => 2,
        }
    }
}

/// An endpoint a service needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its kind.
    pub kind: EndpointKind,
    /// For a leased IP, which one (1-based); 0 otherwise.
    pub sequence_number: u64,
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // The SDK leaves `kind` out for the shared ingress (0, protobuf's default).
        let shared = self.kind == EndpointKind::SharedHttp;
        let mut map = serializer.serialize_map(Some(if shared { 1 } else { 2 }))?;
        if !shared {
            map.serialize_entry("kind", &self.kind.number())?;
        }
        map.serialize_entry("sequence_number", &self.sequence_number)?;
        map.end()
    }
}

/// One exposed port as the provider receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestExpose {
    /// The container port.
    pub port: u32,
    /// The external port, 0 for "same as the container port".
    pub external_port: u32,
    /// `TCP` or `UDP`.
    pub proto: String,
    /// The service allowed to connect, `""` for none.
    pub service: String,
    /// Reachable from outside.
    pub global: bool,
    /// Accepted host names.
    pub hosts: Option<Vec<String>>,
    /// Ingress options with defaults filled in.
    pub http_options: ManifestHttpOptions,
    /// The named IP endpoint, `""` for none.
    pub ip: String,
    /// The IP endpoint's sequence number, 0 for none.
    pub endpoint_sequence_number: u64,
}

/// Ingress options with Akash's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestHttpOptions {
    /// Bytes (default 1 MiB).
    pub max_body_size: u64,
    /// Milliseconds (default 60 s).
    pub read_timeout: u64,
    /// Milliseconds (default 60 s).
    pub send_timeout: u64,
    /// Attempts (default 3).
    pub next_tries: u64,
    /// Milliseconds (default 0).
    pub next_timeout: u64,
    /// Retried failures (default `error`, `timeout`).
    pub next_cases: Vec<String>,
}

/// `params` of a manifest service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestParams {
    /// Volume mounts, `null` when there are none.
    pub storage: Option<Vec<ManifestStorageMount>>,
    /// Permissions, copied from the SDL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<ServicePermissions>,
}

/// One volume mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestStorageMount {
    /// The volume's name.
    pub name: String,
    /// The path, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Read-only.
    pub read_only: bool,
}

/// Registry credentials with the e-mail defaulted to `""`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestCredentials {
    /// Registry host.
    pub host: String,
    /// E-mail.
    pub email: String,
    /// Account.
    pub username: String,
    /// Password or token.
    pub password: String,
}

/// A deployment group as `MsgCreateDeployment` carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupSpec {
    /// The placement's name.
    pub name: String,
    /// What a provider must offer to bid.
    pub requirements: PlacementRequirements,
    /// One entry per distinct compute profile in the placement.
    pub resources: Vec<GroupResource>,
}

/// Provider requirements of a group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlacementRequirements {
    /// Required provider attributes, sorted by key; values as the SDL wrote them.
    pub attributes: Vec<PlacementAttribute>,
    /// Required auditor signatures.
    #[serde(rename = "signedBy")]
    pub signed_by: SignedByRequirement,
}

/// A required provider attribute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlacementAttribute {
    /// The key.
    pub key: String,
    /// The value as written in the SDL (the SDK does not turn it into text).
    pub value: Value,
}

/// Required auditor signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedByRequirement {
    /// All of these.
    #[serde(rename = "allOf")]
    pub all_of: Vec<String>,
    /// Any of these.
    #[serde(rename = "anyOf")]
    pub any_of: Vec<String>,
}

/// Resources of one compute profile in a group, their price and replica count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupResource {
    /// The resources of one replica.
    pub resource: GroupResourceUnits,
    /// The highest price per block.
    pub price: GroupPrice,
    /// Replicas.
    pub count: u64,
}

/// Resources of one replica, as the chain names them (`quantity`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupResourceUnits {
    /// 1-based position in the group.
    pub id: u64,
    /// Millicores.
    pub cpu: CpuUnits,
    /// Bytes.
    pub memory: QuantityUnits,
    /// Volumes.
    pub storage: Vec<NamedQuantityUnits>,
    /// GPUs.
    pub gpu: CpuUnits,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// A quantity as the chain names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantityUnits {
    /// Bytes as decimal text.
    pub quantity: ResourceValue,
    /// Attributes, when the SDL gives any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<Attribute>>,
}

/// A named volume as the chain names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedQuantityUnits {
    /// The volume's name.
    pub name: String,
    /// Bytes as decimal text.
    pub quantity: ResourceValue,
    /// Attributes, when the SDL gives any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<Attribute>>,
}

/// A price with its amount as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupPrice {
    /// The denom.
    pub denom: String,
    /// The amount as JavaScript renders the SDL's number.
    pub amount: String,
}

/// `String.prototype.localeCompare` as Node (ICU, root collation) orders the ASCII
/// strings SDLs use: punctuation before digits before letters, letters without regard
/// to case first, then lower case before upper case. Other characters keep their
/// code-point order after these.
pub fn locale_compare(left: &str, right: &str) -> Ordering {
    fn primary(character: char) -> (u32, u32) {
        // CLDR root order of ASCII punctuation and symbols.
        const PUNCTUATION: &str = "_-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$";
        match character {
            ' ' | '\t' | '\n' | '\r' => (0, character as u32),
            '0'..='9' => (2, character as u32),
            'a'..='z' | 'A'..='Z' => (3, character.to_ascii_lowercase() as u32),
            _ => match PUNCTUATION.find(character) {
                Some(position) => (1, position as u32),
                None => (4, character as u32),
            },
        }
    }
    let by_primary = left.chars().map(primary).cmp(right.chars().map(primary));
    by_primary.then_with(|| {
        // Same letters: lower case first (ICU's tertiary level).
        let case = |character: char| (character.is_ascii_uppercase(), character);
        left.chars().map(case).cmp(right.chars().map(case))
    })
}

/// JavaScript's default `Array.prototype.sort` order: UTF-16 code units.
fn code_unit_compare(left: &str, right: &str) -> Ordering {
    left.encode_utf16().cmp(right.encode_utf16())
}

/// Bytes of a size (`512Mi`, `1G`, `1.5Gi`), rounded up, as the SDK's
/// `convertResourceString` computes them: a number, a one-letter prefix (`k m g t p e`;
/// another letter counts as no prefix), and a suffix (`i` for powers of 1024).
pub fn size_in_bytes(size: &str) -> Option<f64> {
    let lower = size.to_lowercase();
    let digits_end = lower
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let mut letters = unit.chars();
    let prefix = letters.next()?;
    let suffix: String = letters.collect();
    if number.is_empty()
        || !prefix.is_ascii_alphabetic()
        || !suffix.chars().all(|c| c.is_ascii_alphabetic())
    {
        return None;
    }
    let value = parse_float_prefix(number)?;
    let base: f64 = if suffix == "i" { 1024.0 } else { 1000.0 };
    let result = match "kmgtpe".find(prefix) {
        Some(power) => value * base.powi(power as i32 + 1),
        None => value,
    };
    Some(result.ceil())
}

/// Millicores of a CPU request as the SDK computes them: a number is cores; text is
/// a number with an optional unit, `m` meaning millicores and any other meaning cores.
pub fn cpu_millicores(units: &Value) -> Option<f64> {
    match units {
        Value::Number(number) => Some(number.as_f64()? * 1000.0),
        Value::String(text) => {
            let lower = text.to_lowercase();
            let digits_end = lower
                .find(|character: char| !(character.is_ascii_digit() || character == '.'))
                .unwrap_or(lower.len());
            let (number, unit) = lower.split_at(digits_end);
            if number.is_empty() || !unit.chars().all(|c| c.is_ascii_alphabetic()) {
                return None;
            }
            let value = parse_float_prefix(number)?;
            Some(if unit == "m" { value } else { value * 1000.0 })
        }
        _ => None,
    }
}

/// `parseFloat` on a run of digits and dots: the longest prefix that is a number.
fn parse_float_prefix(text: &str) -> Option<f64> {
    let mut end = 0;
    let mut seen_dot = false;
    for (index, character) in text.char_indices() {
        if character == '.' {
            if seen_dot {
                break;
            }
            seen_dot = true;
        }
        end = index + character.len_utf8();
    }
    let prefix = &text[..end];
    if !prefix.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    // "5." and ".5" are numbers to parseFloat; Rust reads both too.
    prefix.parse().ok()
}

/// `parseInt(text, 10)` for the GPU's units in the groups.
fn parse_int_prefix(text: &str) -> String {
    let trimmed = text.trim_start();
    let (sign, rest) = match trimmed.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return "NaN".into();
    }
    let value: f64 = format!("{sign}{digits}").parse().unwrap_or(f64::NAN);
    js_number(value)
}

fn text_of(value: &Value, field: &str) -> Result<String, ManifestError> {
    js_to_string(value).ok_or_else(|| invalid(field, format!("{value} cannot be read as text")))
}

fn attributes_sorted(
    attributes: &IndexMap<String, Value>,
    order: fn(&str, &str) -> Ordering,
    field: &str,
) -> Result<Vec<Attribute>, ManifestError> {
    let mut pairs = attributes
        .iter()
        .map(|(key, value)| {
            Ok(Attribute {
                key: key.clone(),
                value: text_of(value, &format!("{field}.{key}"))?,
            })
        })
        .collect::<Result<Vec<_>, ManifestError>>()?;
    pairs.sort_by(|a, b| order(&a.key, &b.key));
    Ok(pairs)
}

fn storage_attributes(
    attributes: &Option<IndexMap<String, Value>>,
    field: &str,
) -> Result<Option<Vec<Attribute>>, ManifestError> {
    let Some(attributes) = attributes else {
        return Ok(None);
    };
    let mut pairs = attributes
        .iter()
        .map(|(key, value)| {
            Ok(Attribute {
                key: key.clone(),
                value: text_of(value, &format!("{field}.{key}"))?,
            })
        })
        .collect::<Result<Vec<_>, ManifestError>>()?;
    // RAM volumes are never persistent; the SDK says so explicitly.
    if attributes.get("class") == Some(&Value::String("ram".into()))
        && !attributes.contains_key("persistent")
    {
        pairs.push(Attribute {
            key: "persistent".into(),
            value: "false".into(),
        });
    }
    pairs.sort_by(|a, b| locale_compare(&a.key, &b.key));
    Ok(Some(pairs))
}

fn gpu_attributes(resources: &ComputeResources) -> Option<Vec<Attribute>> {
    let attributes = resources.gpu.as_ref()?.attributes.as_ref()?;
    Some(
        attributes
            .vendor
            .iter()
            .flat_map(|(vendor, models)| match models {
                Some(models) => models
                    .iter()
                    .map(|model| {
                        let mut key = format!("vendor/{vendor}/model/{}", model.model);
                        if let Some(ram) = model.ram.as_deref().filter(|ram| !ram.is_empty()) {
                            key.push_str(&format!("/ram/{ram}"));
                        }
                        if let Some(interface) =
                            model.interface.as_deref().filter(|face| !face.is_empty())
                        {
                            key.push_str(&format!("/interface/{interface}"));
                        }
                        Attribute {
                            key,
                            value: "true".into(),
                        }
                    })
                    .collect::<Vec<_>>(),
                None => vec![Attribute {
                    key: format!("vendor/{vendor}/model/*"),
                    value: "true".into(),
                }],
            })
            .collect(),
    )
}

fn bytes_text(size: &str, field: &str) -> Result<String, ManifestError> {
    size_in_bytes(size)
        .map(js_number)
        .ok_or_else(|| invalid(field, format!("{size:?} is not a size such as 512Mi or 1G")))
}

fn millicores_text(units: &Value, field: &str) -> Result<String, ManifestError> {
    cpu_millicores(units).map(js_number).ok_or_else(|| {
        invalid(
            field,
            format!("{units} is not a CPU amount such as 0.5 or 500m"),
        )
    })
}

/// `UDP` or `TCP` (the default), case-insensitively.
fn service_proto(proto: &Option<String>, field: &str) -> Result<String, ManifestError> {
    let raw = proto
        .as_deref()
        .filter(|proto| !proto.is_empty())
        .unwrap_or("TCP")
        .to_uppercase();
    match raw.as_str() {
        "TCP" | "UDP" => Ok(raw),
        _ => Err(invalid(
            field,
            format!("{proto:?} is not a protocol (TCP or UDP)"),
        )),
    }
}

/// Sequence numbers of the named IP endpoints, as the SDK numbers them: per expose,
/// its global IP targets sorted and counted from 1; a later expose overwrites.
fn endpoint_sequence_numbers(sdl: &Sdl) -> HashMap<String, u64> {
    let mut numbers = HashMap::new();
    for service in sdl.services.values() {
        for expose in &service.expose {
            let mut ips: Vec<&str> = expose
                .to
                .iter()
                .flatten()
                .filter(|to| to.global == Some(true))
                .filter_map(|to| to.ip.as_deref().filter(|ip| !ip.is_empty()))
                .collect();
            ips.sort_by(|a, b| code_unit_compare(a, b));
            for (index, ip) in ips.into_iter().enumerate() {
                numbers.insert(ip.to_string(), index as u64 + 1);
            }
        }
    }
    numbers
}

fn external_port(expose: &Expose) -> u32 {
    expose.external_port.unwrap_or(0)
}

fn service_endpoints(
    service: &Service,
    name: &str,
    sequence_numbers: &HashMap<String, u64>,
) -> Result<Vec<Endpoint>, ManifestError> {
    let mut endpoints = Vec::new();
    for (index, expose) in service.expose.iter().enumerate() {
        let proto = service_proto(
            &expose.proto,
            &format!("services.{name}.expose.{index}.proto"),
        )?;
        for to in expose.to.iter().flatten() {
            if to.global != Some(true) {
                continue;
            }
            let external = match external_port(expose) {
                0 => expose.port,
                port => port,
            };
            let ingress = proto == "TCP" && external == 80;
            endpoints.push(Endpoint {
                kind: if ingress {
                    EndpointKind::SharedHttp
                } else {
                    EndpointKind::RandomPort
                },
                sequence_number: 0,
            });
            if let Some(ip) = to.ip.as_deref().filter(|ip| !ip.is_empty()) {
                endpoints.push(Endpoint {
                    kind: EndpointKind::LeasedIp,
                    sequence_number: sequence_numbers.get(ip).copied().unwrap_or(0),
                });
            }
        }
    }
    Ok(endpoints)
}

fn manifest_http_options(options: &Option<HttpOptions>) -> ManifestHttpOptions {
    let options = options.clone().unwrap_or_default();
    // JavaScript's `||`: zero takes the default too.
    let or = |value: Option<u64>, default: u64| value.filter(|v| *v != 0).unwrap_or(default);
    ManifestHttpOptions {
        max_body_size: or(options.max_body_size, 1_048_576),
        read_timeout: or(options.read_timeout, 60_000),
        send_timeout: or(options.send_timeout, 60_000),
        next_tries: or(options.next_tries, 3),
        next_timeout: or(options.next_timeout, 0),
        next_cases: options
            .next_cases
            .unwrap_or_else(|| vec!["error".into(), "timeout".into()]),
    }
}

fn manifest_expose(
    service: &Service,
    name: &str,
    sequence_numbers: &HashMap<String, u64>,
) -> Result<Vec<ManifestExpose>, ManifestError> {
    let mut exposes = Vec::new();
    for (index, expose) in service.expose.iter().enumerate() {
        let proto = service_proto(
            &expose.proto,
            &format!("services.{name}.expose.{index}.proto"),
        )?;
        for to in expose.to.iter().flatten() {
            let ip = to.ip.clone().unwrap_or_default();
            exposes.push(ManifestExpose {
                port: expose.port,
                external_port: external_port(expose),
                proto: proto.clone(),
                service: to.service.clone().unwrap_or_default(),
                global: to.global.unwrap_or(false),
                hosts: expose.accept.clone(),
                http_options: manifest_http_options(&expose.http_options),
                endpoint_sequence_number: sequence_numbers.get(&ip).copied().unwrap_or(0),
                ip,
            });
        }
    }
    // Stable, as JavaScript's sort is.
    exposes.sort_by(|a, b| {
        locale_compare(&a.service, &b.service)
            .then(a.port.cmp(&b.port))
            .then_with(|| locale_compare(&a.proto, &b.proto))
            .then(b.global.cmp(&a.global))
    });
    Ok(exposes)
}

fn manifest_params(service: &Service) -> Option<ManifestParams> {
    let params = service.params.as_ref()?;
    if params.storage.is_none() && params.permissions.is_none() {
        return None;
    }
    let storage = params
        .storage
        .as_ref()
        .filter(|storage| !storage.is_empty())
        .map(|storage| {
            storage
                .iter()
                .map(|(name, mount)| ManifestStorageMount {
                    name: name.clone(),
                    mount: mount.as_ref().and_then(|mount| mount.mount.clone()),
                    read_only: mount
                        .as_ref()
                        .and_then(|mount| mount.read_only)
                        .unwrap_or(false),
                })
                .collect()
        });
    Some(ManifestParams {
        storage,
        permissions: params.permissions.clone(),
    })
}

fn compute_of<'a>(
    sdl: &'a Sdl,
    profile: &str,
    field: &str,
) -> Result<&'a ComputeResources, ManifestError> {
    sdl.profiles
        .compute
        .get(profile)
        .map(|compute| &compute.resources)
        .ok_or_else(|| {
            invalid(
                field,
                format!("profile {profile:?} is not in profiles.compute"),
            )
        })
}

/// The deployment groups Akash derives from an SDL, sorted by placement name.
pub fn groups(sdl: &Sdl) -> Result<Vec<GroupSpec>, ManifestError> {
    let sequence_numbers = endpoint_sequence_numbers(sdl);
    let mut names: Vec<&String> = sdl.services.keys().collect();
    names.sort_by(|a, b| locale_compare(a, b));
    let mut groups: IndexMap<String, GroupSpec> = IndexMap::new();
    // Where each (placement, profile) sits in its group's resources, as the SDK
    // remembers it: it merges a service into that resource only when the position is
    // not 0 (a falsy index in JavaScript), and its merge throws.
    let mut profile_positions: HashMap<(String, String), usize> = HashMap::new();
    for name in names {
        let service = &sdl.services[name.as_str()];
        let deployments = sdl
            .deployment
            .get(name.as_str())
            .ok_or_else(|| invalid(format!("deployment.{name}"), "the service is not deployed"))?;
        for (placement_name, deployment) in deployments {
            let field = format!("deployment.{name}.{placement_name}.profile");
            let compute = compute_of(sdl, &deployment.profile, &field)?;
            let placement = sdl.profiles.placement.get(placement_name).ok_or_else(|| {
                invalid(
                    format!("deployment.{name}.{placement_name}"),
                    "the placement is not in profiles.placement",
                )
            })?;
            let pricing = placement.pricing.get(&deployment.profile).ok_or_else(|| {
                invalid(
                    format!("profiles.placement.{placement_name}.pricing"),
                    format!("no price for profile {:?}", deployment.profile),
                )
            })?;
            let group = groups.entry(placement_name.clone()).or_insert_with(|| {
                let mut attributes: Vec<PlacementAttribute> = placement
                    .attributes
                    .iter()
                    .flatten()
                    .map(|(key, value)| PlacementAttribute {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect();
                attributes.sort_by(|a, b| locale_compare(&a.key, &b.key));
                let signed_by = placement.signed_by.clone().unwrap_or_default();
                GroupSpec {
                    name: placement_name.clone(),
                    requirements: PlacementRequirements {
                        attributes,
                        signed_by: SignedByRequirement {
                            all_of: signed_by.all_of.unwrap_or_default(),
                            any_of: signed_by.any_of.unwrap_or_default(),
                        },
                    },
                    resources: Vec::new(),
                }
            });
            let key = (placement_name.clone(), deployment.profile.clone());
            if profile_positions
                .get(&key)
                .is_some_and(|position| *position != 0)
            {
                return Err(invalid(
                    field,
                    format!(
                        "profile {:?} is used by another service of placement {placement_name:?}; \
                         Akash's SDK cannot derive groups for that, give each service its own profile",
                        deployment.profile
                    ),
                ));
            }
            profile_positions.insert(key, group.resources.len());
            let compute_field = format!("profiles.compute.{}.resources", deployment.profile);
            let resource = GroupResourceUnits {
                id: group.resources.len() as u64 + 1,
                cpu: CpuUnits {
                    units: ResourceValue::new(millicores_text(
                        &compute.cpu.units,
                        &format!("{compute_field}.cpu.units"),
                    )?),
                    attributes: compute
                        .cpu
                        .attributes
                        .as_ref()
                        .map(|attributes| {
                            attributes_sorted(
                                attributes,
                                locale_compare,
                                &format!("{compute_field}.cpu.attributes"),
                            )
                        })
                        .transpose()?,
                },
                memory: QuantityUnits {
                    quantity: ResourceValue::new(bytes_text(
                        &compute.memory.size,
                        &format!("{compute_field}.memory.size"),
                    )?),
                    attributes: compute
                        .memory
                        .attributes
                        .as_ref()
                        .map(|attributes| {
                            attributes_sorted(
                                attributes,
                                locale_compare,
                                &format!("{compute_field}.memory.attributes"),
                            )
                        })
                        .transpose()?,
                },
                storage: compute
                    .storage
                    .volumes()
                    .iter()
                    .map(|volume| {
                        Ok(NamedQuantityUnits {
                            name: volume.name.clone().unwrap_or_else(|| "default".into()),
                            quantity: ResourceValue::new(bytes_text(
                                &volume.size,
                                &format!("{compute_field}.storage.size"),
                            )?),
                            attributes: storage_attributes(
                                &volume.attributes,
                                &format!("{compute_field}.storage.attributes"),
                            )?,
                        })
                    })
                    .collect::<Result<_, ManifestError>>()?,
                gpu: CpuUnits {
                    units: ResourceValue::new(group_gpu_units(compute)),
                    attributes: gpu_attributes(compute),
                },
                endpoints: service_endpoints(service, name, &sequence_numbers)?,
            };
            group.resources.push(GroupResource {
                resource,
                price: GroupPrice {
                    denom: pricing.denom.clone(),
                    amount: text_of(
                        &pricing.amount,
                        &format!(
                            "profiles.placement.{placement_name}.pricing.{}.amount",
                            deployment.profile
                        ),
                    )?,
                },
                count: deployment.count,
            });
        }
    }
    let mut groups: Vec<GroupSpec> = groups.into_values().collect();
    groups.sort_by(|a, b| code_unit_compare(&a.name, &b.name));
    Ok(groups)
}

/// GPU units in the groups: `units || "0"`, text through `parseInt`.
fn group_gpu_units(compute: &ComputeResources) -> String {
    match compute.gpu.as_ref().map(|gpu| &gpu.units) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => "0".into(),
        Some(Value::String(text)) if text.is_empty() => "0".into(),
        Some(Value::String(text)) => parse_int_prefix(text),
        Some(other) => js_to_string(other).unwrap_or_else(|| "0".into()),
    }
}

/// GPU units in the manifest: `units || 0`, text as written.
fn manifest_gpu_units(compute: &ComputeResources) -> String {
    match compute.gpu.as_ref().map(|gpu| &gpu.units) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => "0".into(),
        Some(Value::String(text)) if text.is_empty() => "0".into(),
        Some(other) => js_to_string(other).unwrap_or_else(|| "0".into()),
    }
}

/// The manifest a provider receives for an SDL: one group per placement, in the
/// document's order, each with its services sorted by name.
pub fn manifest(sdl: &Sdl) -> Result<Vec<ManifestGroup>, ManifestError> {
    let groups = groups(sdl)?;
    let sequence_numbers = endpoint_sequence_numbers(sdl);
    let mut manifest = Vec::new();
    for (placement_index, placement_name) in sdl.profiles.placement.keys().enumerate() {
        let mut names: Vec<&String> = sdl
            .deployment
            .iter()
            .filter(|(_, deployments)| deployments.contains_key(placement_name))
            .map(|(name, _)| name)
            .collect();
        names.sort_by(|a, b| locale_compare(a, b));
        let mut services = Vec::new();
        for (service_index, name) in names.into_iter().enumerate() {
            let service = sdl.services.get(name.as_str()).ok_or_else(|| {
                invalid(
                    format!("deployment.{name}"),
                    "the service is not in services",
                )
            })?;
            let deployment = &sdl.deployment[name.as_str()][placement_name.as_str()];
            // The SDK takes the id from the group at this placement's position among the
            // groups sorted by name, which is this placement's group when the document
            // lists placements in that order.
            let id = groups
                .get(placement_index)
                .and_then(|group| group.resources.get(service_index))
                .map(|resource| resource.resource.id)
                .ok_or_else(|| {
                    invalid(
                        format!("profiles.placement.{placement_name}"),
                        "Akash's SDK cannot number this placement's services: list placements in name order",
                    )
                })?;
            let field = format!("deployment.{name}.{placement_name}.profile");
            let compute = compute_of(sdl, &deployment.profile, &field)?;
            let compute_field = format!("profiles.compute.{}.resources", deployment.profile);
            let resources = ManifestResources {
                id,
                cpu: CpuUnits {
                    units: ResourceValue::new(millicores_text(
                        &compute.cpu.units,
                        &format!("{compute_field}.cpu.units"),
                    )?),
                    attributes: compute
                        .cpu
                        .attributes
                        .as_ref()
                        .map(|attributes| {
                            attributes_sorted(
                                attributes,
                                code_unit_compare,
                                &format!("{compute_field}.cpu.attributes"),
                            )
                        })
                        .transpose()?,
                },
                memory: SizedUnits {
                    size: ResourceValue::new(bytes_text(
                        &compute.memory.size,
                        &format!("{compute_field}.memory.size"),
                    )?),
                    attributes: compute
                        .memory
                        .attributes
                        .as_ref()
                        .map(|attributes| {
                            attributes_sorted(
                                attributes,
                                code_unit_compare,
                                &format!("{compute_field}.memory.attributes"),
                            )
                        })
                        .transpose()?,
                },
                storage: compute
                    .storage
                    .volumes()
                    .iter()
                    .map(|volume| {
                        Ok(NamedSizedUnits {
                            name: volume.name.clone().unwrap_or_else(|| "default".into()),
                            size: ResourceValue::new(bytes_text(
                                &volume.size,
                                &format!("{compute_field}.storage.size"),
                            )?),
                            attributes: storage_attributes(
                                &volume.attributes,
                                &format!("{compute_field}.storage.attributes"),
                            )?,
                        })
                    })
                    .collect::<Result<_, ManifestError>>()?,
                gpu: CpuUnits {
                    units: ResourceValue::new(manifest_gpu_units(compute)),
                    attributes: gpu_attributes(compute),
                },
                endpoints: service_endpoints(service, name, &sequence_numbers)?,
            };
            services.push(ManifestService {
                name: name.clone(),
                image: service.image.clone(),
                command: service.command.clone(),
                args: service.args.clone(),
                env: service.env.clone(),
                resources,
                count: deployment.count,
                expose: manifest_expose(service, name, &sequence_numbers)?,
                params: manifest_params(service),
                credentials: service
                    .credentials
                    .as_ref()
                    .map(|credentials| ManifestCredentials {
                        host: credentials.host.clone(),
                        email: credentials.email.clone().unwrap_or_default(),
                        username: credentials.username.clone(),
                        password: credentials.password.clone(),
                    }),
            });
        }
        manifest.push(ManifestGroup {
            name: placement_name.clone(),
            services,
        });
    }
    Ok(manifest)
}

/// The manifest as the JSON whose hash is its version: keys sorted at every level,
/// no whitespace, and `<`, `>`, `&` escaped as `\u003c`, `\u003e`, `\u0026` (Go's
/// `encoding/json` habit, which the SDK reproduces).
pub fn manifest_sorted_json(manifest: &[ManifestGroup]) -> String {
    sorted_json(&serde_json::to_value(manifest).expect("a manifest is plain data"))
}

/// Any JSON value written as [`manifest_sorted_json`] writes a manifest (a manifest read
/// back from its sorted JSON and written again is the same text).
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
            keys.sort_by(|a, b| code_unit_compare(a, b));
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
        // Strings escape as JSON.stringify escapes them; integers print alike.
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The manifest version: SHA-256 of the sorted JSON's UTF-8 bytes.
pub fn manifest_version(sorted_json: &str) -> [u8; 32] {
    Sha256::digest(sorted_json.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_rounded_up() {
        let table = [
            ("512Mi", Some(536_870_912.0)),
            ("1Gi", Some(1_073_741_824.0)),
            ("1G", Some(1e9)),
            ("1GB", Some(1e9)),
            ("1.5Ki", Some(1536.0)),
            ("0.3k", Some(300.0)),
            ("1Ti", Some(1_099_511_627_776.0)),
            ("10b", Some(10.0)),
            ("512", None),
            ("Mi", None),
            ("1Mi2", None),
        ];
        for (size, expected) in table {
            assert_eq!(size_in_bytes(size), expected, "{size}");
        }
    }

    #[test]
    fn cpu_is_millicores() {
        let table = [
            (serde_json::json!(0.5), Some(500.0)),
            (serde_json::json!(2), Some(2000.0)),
            (serde_json::json!("100m"), Some(100.0)),
            (serde_json::json!("1.5"), Some(1500.0)),
            (serde_json::json!("x"), None),
            (serde_json::json!(true), None),
        ];
        for (units, expected) in table {
            assert_eq!(cpu_millicores(&units), expected, "{units}");
        }
    }

    #[test]
    fn locale_order_is_icu_order_for_ascii() {
        // The order Node 20's `localeCompare` gives these.
        let expected = ["a", "a_b", "a-b", "a.b", "a/b", "a1", "ab", "aB", "Ab", "b"];
        let mut shuffled = expected;
        shuffled.reverse();
        shuffled.sort_by(|a, b| locale_compare(a, b));
        assert_eq!(shuffled, expected);
    }

    #[test]
    fn sorted_json_sorts_keys_and_escapes_html() {
        let manifest = vec![ManifestGroup {
            name: "a<b>&c".into(),
            services: vec![],
        }];
        assert_eq!(
            manifest_sorted_json(&manifest),
            r#"[{"name":"a\u003cb\u003e\u0026c","services":[]}]"#
        );
    }

    #[test]
    fn the_version_is_sha256_of_the_sorted_json() {
        assert_eq!(
            hex::encode(manifest_version("[]")),
            "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
        );
    }

    #[test]
    fn endpoints_follow_the_ingress_rule() {
        let sdl = Sdl::from_yaml(
            "version: '2.0'\nservices:\n  web:\n    image: nginx\n    expose:\n    - {port: 8080, as: 80, to: [{global: true}]}\n    - {port: 9000, to: [{global: true}]}\n    - {port: 80, proto: udp, to: [{global: true}]}\n    - {port: 5000, to: [{service: db}]}\nprofiles:\n  compute:\n    web: {resources: {cpu: {units: 1}, memory: {size: 1Gi}, storage: {size: 1Gi}}}\n  placement:\n    dc: {pricing: {web: {denom: uakt, amount: 1}}}\ndeployment:\n  web: {dc: {profile: web, count: 1}}\n",
        )
        .unwrap();
        let kinds: Vec<EndpointKind> = groups(&sdl).unwrap()[0].resources[0]
            .resource
            .endpoints
            .iter()
            .map(|endpoint| endpoint.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                EndpointKind::SharedHttp,
                EndpointKind::RandomPort,
                EndpointKind::RandomPort
            ]
        );
    }

    #[test]
    fn a_profile_shared_in_one_placement_follows_the_sdk() {
        let sdl = |first_profile: &str| {
            Sdl::from_yaml(&format!(
                "version: '2.0'\nservices:\n  a: {{image: x, expose: []}}\n  b: {{image: x, expose: []}}\n  c: {{image: x, expose: []}}\nprofiles:\n  compute:\n    p: {{resources: {{cpu: {{units: 1}}, memory: {{size: 1Gi}}, storage: {{size: 1Gi}}}}}}\n    q: {{resources: {{cpu: {{units: 2}}, memory: {{size: 1Gi}}, storage: {{size: 1Gi}}}}}}\n  placement:\n    dc: {{pricing: {{p: {{denom: uakt, amount: 1}}, q: {{denom: uakt, amount: 1}}}}}}\ndeployment:\n  a: {{dc: {{profile: {first_profile}, count: 1}}}}\n  b: {{dc: {{profile: p, count: 1}}}}\n  c: {{dc: {{profile: p, count: 1}}}}\n"
            ))
            .unwrap()
        };
        // a, b and c share p: b finds p at position 0 and gets its own resource, c finds
        // it at position 1 and the SDK throws.
        let error = groups(&sdl("p")).unwrap_err().to_string();
        assert!(
            error.starts_with("deployment.c.dc.profile: profile \"p\" is used by another service"),
            "{error}"
        );
        // a has q: b takes p at position 1, and c cannot join it.
        assert!(groups(&sdl("q")).is_err());
    }
}
