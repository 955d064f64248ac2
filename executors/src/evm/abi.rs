//! Contract calls described by a function signature (`approve(address,uint256)`,
//! `function stake(uint256 amount)`) or a JSON ABI fragment, with arguments written as
//! JSON, and results turned back into JSON.

use alloy::dyn_abi::{DynSolType, DynSolValue, FunctionExt, JsonAbiExt, Specifier};
use alloy::json_abi::Function;
use serde_json::Value;

/// A function to call: parsed from a signature or a JSON ABI item.
pub(crate) fn parse_function(
    signature: Option<&str>,
    abi: Option<&Value>,
) -> Result<Function, String> {
    match (signature, abi) {
        (Some(_), Some(_)) => Err("give either function or abi, not both".into()),
        (Some(signature), None) => Function::parse(signature.trim()).map_err(|error| {
            format!("function '{signature}' is not a Solidity signature: {error}")
        }),
        (None, Some(abi)) => serde_json::from_value(abi.clone())
            .map_err(|error| format!("abi is not a JSON ABI function item: {error}")),
        (None, None) => Err("give function (a signature) or abi (a JSON ABI item)".into()),
    }
}

/// ABI-encodes a call of `function` with `args` (strings as Solidity literals —
/// addresses, `"1000000"`, `"true"`, `"[1,2]"` — or JSON numbers and booleans).
pub(crate) fn encode_call(function: &Function, args: &[Value]) -> Result<Vec<u8>, String> {
    if args.len() != function.inputs.len() {
        return Err(format!(
            "{} takes {} argument(s), {} given",
            function.signature(),
            function.inputs.len(),
            args.len()
        ));
    }
    let values = function
        .inputs
        .iter()
        .zip(args)
        .enumerate()
        .map(|(index, (param, arg))| {
            let name = if param.name.is_empty() {
                format!("argument {index}")
            } else {
                format!("argument {index} ({})", param.name)
            };
            let kind: DynSolType = param
                .resolve()
                .map_err(|error| format!("{name}: type {}: {error}", param.ty))?;
            let text = match arg {
                Value::String(text) => text.clone(),
                Value::Number(_) | Value::Bool(_) | Value::Array(_) => arg.to_string(),
                other => return Err(format!("{name}: {other} is not a {}", param.ty)),
            };
            kind.coerce_str(&text)
                .map_err(|error| format!("{name}: '{text}' is not a {}: {error}", param.ty))
        })
        .collect::<Result<Vec<_>, _>>()?;
    function
        .abi_encode_input(&values)
        .map_err(|error| format!("cannot encode {}: {error}", function.signature()))
}

/// Decodes what `function` returned into JSON values, one per output.
pub(crate) fn decode_output(function: &Function, data: &[u8]) -> Result<Vec<Value>, String> {
    function
        .abi_decode_output(data)
        .map(|values| values.iter().map(to_json).collect())
        .map_err(|error| {
            format!(
                "cannot decode what {} returned: {error}",
                function.signature()
            )
        })
}

/// A Solidity value as JSON: integers as decimal strings (they exceed 2^53), addresses
/// checksummed, bytes as `0x` hex, arrays and tuples as arrays.
pub(crate) fn to_json(value: &DynSolValue) -> Value {
    match value {
        DynSolValue::Bool(flag) => Value::Bool(*flag),
        DynSolValue::Int(number, _) => Value::String(number.to_string()),
        DynSolValue::Uint(number, _) => Value::String(number.to_string()),
        DynSolValue::Address(address) => Value::String(address.to_checksum(None)),
        DynSolValue::String(text) => Value::String(text.clone()),
        DynSolValue::Bytes(bytes) => Value::String(format!("0x{}", hex::encode(bytes))),
        DynSolValue::FixedBytes(word, size) => {
            Value::String(format!("0x{}", hex::encode(&word[..*size])))
        }
        DynSolValue::Function(function) => Value::String(format!("0x{}", hex::encode(function))),
        DynSolValue::Array(items) | DynSolValue::FixedArray(items) | DynSolValue::Tuple(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signatures_and_fragments_encode_the_same_call() {
        let from_signature = parse_function(
            Some("function approve(address spender, uint256 amount) returns (bool)"),
            None,
        )
        .unwrap();
        let fragment = json!({"type": "function", "name": "approve", "stateMutability": "nonpayable",
            "inputs": [{"name": "spender", "type": "address"}, {"name": "amount", "type": "uint256"}],
            "outputs": [{"name": "", "type": "bool"}]});
        let from_abi = parse_function(None, Some(&fragment)).unwrap();
        let args = [
            json!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            json!("1000000"),
        ];
        let data = encode_call(&from_signature, &args).unwrap();
        assert_eq!(data, encode_call(&from_abi, &args).unwrap());
        // approve's selector, then two words.
        assert_eq!(hex::encode(&data[..4]), "095ea7b3");
        assert_eq!(data.len(), 4 + 64);
        assert_eq!(
            encode_call(
                &from_abi,
                &[
                    json!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
                    json!(1000000)
                ]
            )
            .unwrap(),
            data
        );
    }

    #[test]
    fn bad_calls_say_which_argument() {
        let function = parse_function(Some("transfer(address to, uint256 amount)"), None).unwrap();
        let error = encode_call(&function, &[json!("0x12"), json!("5")]).unwrap_err();
        assert!(
            error.starts_with("argument 0 (to): '0x12' is not a address"),
            "{error}"
        );
        let error = encode_call(&function, &[json!("5")]).unwrap_err();
        assert!(error.contains("takes 2 argument(s), 1 given"), "{error}");
        assert!(parse_function(Some("not a function("), None).is_err());
        assert!(parse_function(None, None).is_err());
    }

    #[test]
    fn outputs_become_json() {
        let function =
            parse_function(Some("f() returns (uint256, address, bool, string)"), None).unwrap();
        let values = DynSolValue::Tuple(vec![
            DynSolValue::Uint(
                alloy::primitives::U256::from(10u64).pow(alloy::primitives::U256::from(20u64)),
                256,
            ),
            DynSolValue::Address(
                "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                    .parse()
                    .unwrap(),
            ),
            DynSolValue::Bool(true),
            DynSolValue::String("staking paused".into()),
        ]);
        let decoded = decode_output(&function, &values.abi_encode_params()).unwrap();
        assert_eq!(
            decoded,
            vec![
                json!("100000000000000000000"),
                json!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
                json!(true),
                json!("staking paused")
            ]
        );
    }
}
