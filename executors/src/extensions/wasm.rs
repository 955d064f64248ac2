//! The `extism` host: an extension is an Extism WASM plugin, run in-process.

use std::sync::Arc;

use async_trait::async_trait;

use super::config::ExtensionConfig;
use super::{Host, Protocol, Transport};

/// Instantiates WASM plugins.
#[derive(Debug, Clone, Copy, Default)]
pub struct WasmHost;

#[async_trait]
impl Host for WasmHost {
    fn protocol(&self) -> Protocol {
        Protocol::Extism
    }

    async fn start(&self, _config: &ExtensionConfig) -> Result<Arc<dyn Transport>, String> {
        Err("WASM extensions are not available in this build yet".to_owned())
    }
}
