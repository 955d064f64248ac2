//! The `cosmos` executor's deployment and market messages judged by Akash's own SDK:
//! an SDL is turned into groups by the SDK (`tests/sdl-judge/judge.mjs`), the executor
//! encodes `MsgCreateDeployment`, `MsgCloseDeployment` and `MsgCreateLease` from them
//! with its own types, and the SDK's generated codecs (`tests/sdl-judge/tx-judge.mjs`)
//! decode those bytes. Every field the SDK reads must be what the executor meant, and
//! the SDK's own re-encoding of what it read must be byte-equal to the executor's.
//!
//! Needs Node and `npm ci` in `tests/sdl-judge` (scripts/test runs it).

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmrs::Any;
use morpheus_executors::cosmos::{
    groups_from_json, parse_manifest_hash, BidId, Coin, DeploymentId, MsgCloseDeployment,
    MsgCreateDeployment, MsgCreateLease, MSG_CLOSE_DEPLOYMENT_TYPE_URL,
    MSG_CREATE_DEPLOYMENT_TYPE_URL, MSG_CREATE_LEASE_TYPE_URL,
};
use morpheus_tests::sdl_judge::{judge, judge_dir};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const OWNER: &str = "akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63";
const PROVIDER: &str = "akash18ga02jzaq8cw52anyhzkwta5wygufgu6zsz6xc";

/// Two placements (two groups); replicas; a fractional and a whole price; placement
/// attributes of YAML string and number types; an auditor; the shared ingress and a
/// random port; a persistent volume with a class; a GPU with a model.
const SDL: &str = r#"
version: "2.0"
services:
  web:
    image: nginx:1.27
    expose:
      - port: 80
        as: 80
        to:
          - global: true
      - port: 8443
        to:
          - global: true
  db:
    image: postgres:17
    params:
      storage:
        data:
          mount: /var/lib/postgresql/data
    expose:
      - port: 5432
        to:
          - service: web
profiles:
  compute:
    web:
      resources:
        cpu:
          units: 0.5
        memory:
          size: 512Mi
        storage:
          size: 1Gi
    db:
      resources:
        cpu:
          units: 2
        memory:
          size: 2Gi
        storage:
          - size: 1Gi
          - name: data
            size: 20Gi
            attributes:
              persistent: true
              class: beta3
        gpu:
          units: 1
          attributes:
            vendor:
              nvidia:
                - model: a100
  placement:
    west:
      attributes:
        region: us-west
        tier: 3
      signedBy:
        anyOf:
          - akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63
      pricing:
        web:
          denom: uakt
          amount: 12.5
    east:
      attributes:
        region: us-east
      pricing:
        db:
          denom: uakt
          amount: 1000
deployment:
  web:
    west:
      profile: web
      count: 2
  db:
    east:
      profile: db
      count: 1
"#;

/// The SDK's reading of [`SDL`]: its sorted manifest JSON and its `groups()`.
fn sdk_sdl() -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deploy.yaml");
    std::fs::write(&path, SDL).unwrap();
    let answer = judge(&[path]).remove(0);
    if let Some(error) = answer.get("error") {
        panic!("the SDK rejected the fixture SDL: {error}");
    }
    (
        answer["manifestSortedJSON"].as_str().unwrap().to_owned(),
        answer["groups"].clone(),
    )
}

/// Runs `tx-judge.mjs` on `inputs` (one answer per input, in order).
fn tx_judge(inputs: &[Value]) -> Vec<Value> {
    let dir = judge_dir();
    assert!(
        dir.join("node_modules/@akashnetwork/chain-sdk/package.json")
            .exists(),
        "Akash's SDK is not installed: run `scripts/test` (or `npm ci` in {})",
        dir.display()
    );
    let mut child = Command::new("node")
        .arg(dir.join("tx-judge.mjs"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (install nodejs)");
    let mut stdin = child.stdin.take().unwrap();
    for input in inputs {
        writeln!(stdin, "{input}").unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "tx-judge failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON answer per line"))
        .collect();
    assert_eq!(answers.len(), inputs.len(), "one answer per input");
    answers
}

/// The SDK's reading of one message: asserts it decoded it under `any`'s type URL and
/// re-encodes it to exactly the executor's bytes; returns its `toJSON`.
fn judged(any: &Any) -> Value {
    let value_b64 = BASE64.encode(&any.value);
    let answer = tx_judge(&[json!({"type_url": any.type_url, "value_b64": value_b64})]).remove(0);
    if let Some(error) = answer.get("error") {
        panic!("the SDK could not decode {}: {error}", any.type_url);
    }
    assert_eq!(answer["type_url"], any.type_url.as_str());
    assert_eq!(
        answer["reencoded_b64"], value_b64,
        "the SDK's encoding of what it decoded differs from the executor's bytes"
    );
    answer["message"].clone()
}

/// A `ResourceValue.val` as the SDK's `toJSON` writes it (base64 of the ASCII
/// decimal), back to the decimal text.
fn value_text(value: &Value) -> String {
    let bytes = BASE64.decode(value["val"].as_str().unwrap_or("")).unwrap();
    String::from_utf8(bytes).unwrap()
}

/// A list `toJSON` leaves out when empty.
fn list(value: &Value) -> Vec<Value> {
    value.as_array().cloned().unwrap_or_default()
}

/// `(key, value)` pairs, values as the chain's strings (`tier: 3` is `"3"`).
fn pairs(value: &Value) -> Vec<(String, String)> {
    list(value)
        .iter()
        .map(|a| {
            let text = match &a["value"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (a["key"].as_str().unwrap().to_owned(), text)
        })
        .collect()
}

/// Asserts the SDK decoded `decoded` (its `toJSON` of a `GroupSpec`) from the executor's
/// bytes as the group `sdl` of `SDL.groups()`, field by field.
fn assert_group(sdl: &Value, decoded: &Value) {
    let name = sdl["name"].as_str().unwrap();
    assert_eq!(decoded["name"], name);
    let wanted = &sdl["requirements"];
    let got = &decoded["requirements"];
    assert_eq!(
        pairs(&got["attributes"]),
        pairs(&wanted["attributes"]),
        "{name}: placement attributes"
    );
    assert_eq!(
        list(&got["signed_by"]["all_of"]),
        list(&wanted["signedBy"]["allOf"]),
        "{name}: signed_by.all_of"
    );
    assert_eq!(
        list(&got["signed_by"]["any_of"]),
        list(&wanted["signedBy"]["anyOf"]),
        "{name}: signed_by.any_of"
    );
    let units = list(&sdl["resources"]);
    let decoded_units = list(&decoded["resources"]);
    assert_eq!(decoded_units.len(), units.len(), "{name}: resource units");
    for (unit, got) in units.iter().zip(&decoded_units) {
        let (r, g) = (&unit["resource"], &got["resource"]);
        let what = format!("{name} resource {}", r["id"]);
        assert_eq!(g["id"], r["id"], "{what}: id");
        assert_eq!(got["count"], unit["count"], "{what}: count");
        assert_eq!(
            value_text(&g["cpu"]["units"]),
            r["cpu"]["units"]["val"].as_str().unwrap(),
            "{what}: cpu"
        );
        assert_eq!(
            pairs(&g["cpu"]["attributes"]),
            pairs(&r["cpu"]["attributes"])
        );
        assert_eq!(
            value_text(&g["memory"]["quantity"]),
            r["memory"]["quantity"]["val"].as_str().unwrap(),
            "{what}: memory"
        );
        assert_eq!(
            value_text(&g["gpu"]["units"]),
            r["gpu"]["units"]["val"].as_str().unwrap(),
            "{what}: gpu"
        );
        assert_eq!(
            pairs(&g["gpu"]["attributes"]),
            pairs(&r["gpu"]["attributes"]),
            "{what}: gpu attributes"
        );
        let volumes = list(&r["storage"]);
        let decoded_volumes = list(&g["storage"]);
        assert_eq!(decoded_volumes.len(), volumes.len(), "{what}: volumes");
        for (volume, got) in volumes.iter().zip(&decoded_volumes) {
            assert_eq!(got["name"], volume["name"], "{what}: volume name");
            assert_eq!(
                value_text(&got["quantity"]),
                volume["quantity"]["val"].as_str().unwrap(),
                "{what}: volume size"
            );
            assert_eq!(
                pairs(&got["attributes"]),
                pairs(&volume["attributes"]),
                "{what}: volume attributes"
            );
        }
        let endpoints = list(&r["endpoints"]);
        let decoded_endpoints = list(&g["endpoints"]);
        assert_eq!(
            decoded_endpoints.len(),
            endpoints.len(),
            "{what}: endpoints"
        );
        for (endpoint, got) in endpoints.iter().zip(&decoded_endpoints) {
            // The SDK writes the kind by name and leaves out SHARED_HTTP (0).
            let kind = match endpoint["kind"].as_u64().unwrap_or(0) {
                0 => Value::Null,
                1 => json!("RANDOM_PORT"),
                2 => json!("LEASED_IP"),
                other => panic!("{what}: endpoint kind {other} in the SDL's groups"),
            };
            assert_eq!(got["kind"], kind, "{what}: endpoint kind");
            assert_eq!(
                got["sequence_number"].as_u64().unwrap_or(0),
                endpoint["sequence_number"].as_u64().unwrap_or(0),
                "{what}: endpoint sequence number"
            );
        }
        // The SDK's DecCoin patch reads the LegacyDec wire integer back as the
        // decimal: an unscaled price would come back 10¹⁸ times too small.
        assert_eq!(
            got["price"]["denom"], unit["price"]["denom"],
            "{what}: denom"
        );
        assert_eq!(
            got["price"]["amount"], unit["price"]["amount"],
            "{what}: price"
        );
    }
}

#[test]
fn create_deployment_from_an_sdls_groups_decodes_field_by_field_with_the_sdk() {
    let (sorted_json, groups) = sdk_sdl();
    assert_eq!(groups.as_array().unwrap().len(), 2, "{groups}");
    let hash_hex = hex::encode(Sha256::digest(sorted_json.as_bytes()));
    let hash = parse_manifest_hash(&hash_hex).unwrap();
    let specs = groups_from_json(&groups).unwrap();
    // Beyond u32 and JavaScript's safe integers: a dseq must survive as a 64-bit value.
    let dseq = 9_007_199_254_740_993_u64;
    let message = MsgCreateDeployment::new(OWNER, dseq, specs, hash, &Coin::new(5_000_000, "uakt"));
    let any = message.to_any();
    assert_eq!(any.type_url, MSG_CREATE_DEPLOYMENT_TYPE_URL);
    let decoded = judged(&any);

    assert_eq!(decoded["id"]["owner"], OWNER);
    assert_eq!(decoded["id"]["dseq"], dseq.to_string());
    assert_eq!(
        hex::encode(BASE64.decode(decoded["hash"].as_str().unwrap()).unwrap()),
        hash_hex
    );
    assert_eq!(decoded["deposit"]["amount"]["denom"], "uakt");
    assert_eq!(decoded["deposit"]["amount"]["amount"], "5000000");
    assert_eq!(decoded["deposit"]["sources"], json!(["balance"]));
    let decoded_groups = list(&decoded["groups"]);
    let sdl_groups = list(&groups);
    assert_eq!(decoded_groups.len(), sdl_groups.len());
    for (sdl, got) in sdl_groups.iter().zip(&decoded_groups) {
        assert_group(sdl, got);
    }
    // The fixture's features are really in there (so the loop above compared them).
    let all = decoded.to_string();
    for feature in [
        "RANDOM_PORT",
        "12.5",
        "vendor/nvidia/model/a100",
        "persistent",
    ] {
        assert!(all.contains(feature), "{feature} missing from {all}");
    }
}

#[test]
fn close_deployment_decodes_with_the_sdk() {
    let message = MsgCloseDeployment {
        id: Some(DeploymentId {
            owner: OWNER.to_owned(),
            dseq: 1_234_567,
        }),
    };
    let any = message.to_any();
    assert_eq!(any.type_url, MSG_CLOSE_DEPLOYMENT_TYPE_URL);
    let decoded = judged(&any);
    assert_eq!(decoded, json!({"id": {"owner": OWNER, "dseq": "1234567"}}));
}

#[test]
fn create_lease_decodes_with_the_sdk_for_first_and_later_bids() {
    for (gseq, oseq, bseq) in [(1, 1, 0), (2, 3, 7)] {
        let message = MsgCreateLease {
            bid_id: Some(BidId {
                owner: OWNER.to_owned(),
                dseq: 4_000_000_001,
                gseq,
                oseq,
                provider: PROVIDER.to_owned(),
                bseq,
            }),
        };
        let any = message.to_any();
        assert_eq!(any.type_url, MSG_CREATE_LEASE_TYPE_URL);
        let decoded = judged(&any);
        let id = &decoded["bid_id"];
        assert_eq!(id["owner"], OWNER);
        assert_eq!(id["dseq"], "4000000001");
        assert_eq!(id["gseq"], gseq);
        assert_eq!(id["oseq"], oseq);
        assert_eq!(id["provider"], PROVIDER);
        // toJSON leaves a zero bseq out.
        assert_eq!(
            id["bseq"].as_u64().unwrap_or(0),
            u64::from(bseq),
            "{decoded}"
        );
    }
}

/// The judge itself can say no: bytes it cannot read under a type URL are an error,
/// and bytes of another message read as something else (so the field checks above
/// would catch a wrong type URL or layout).
#[test]
fn the_judge_refuses_what_the_sdk_cannot_read() {
    let answers = tx_judge(&[
        json!({"type_url": "/akash.deployment.v1beta4.NoSuchMessage", "value_b64": ""}),
        json!({"type_url": MSG_CREATE_DEPLOYMENT_TYPE_URL, "value_b64": BASE64.encode([0x0a, 0x05, 0x01])}),
    ]);
    let first = answers[0]["error"].as_str().unwrap();
    assert!(first.contains("no codec for"), "{first}");
    assert!(answers[1].get("error").is_some(), "{}", answers[1]);
}
