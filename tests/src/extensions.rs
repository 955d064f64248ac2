//! The extension fixtures shared by the executors' tests and the end-to-end ones: the
//! Python conformance program (`executors/tests/fixtures/conformance.py`), which speaks
//! stdio or serves JSON-RPC over HTTP, and the WAT plugins beside it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A file under `executors/tests/fixtures`.
fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../executors/tests/fixtures")
        .join(relative)
        .canonicalize()
        .unwrap_or_else(|error| panic!("the fixture {relative} exists: {error}"))
}

/// The Python conformance program.
pub fn conformance_script() -> PathBuf {
    fixture("conformance.py")
}

/// A WAT plugin in `executors/tests/fixtures/wasm` (`conformance.wat`, `echo.wat`, …).
pub fn wasm_plugin(name: &str) -> PathBuf {
    fixture(&format!("wasm/{name}"))
}

/// The conformance program serving JSON-RPC over HTTP on 127.0.0.1, killed when dropped.
pub struct ConformanceService {
    child: Child,
    port: u16,
}

impl ConformanceService {
    /// Starts it on `port` (a free one when `None`) and waits until it listens.
    pub fn start(port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(|| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().unwrap().port()
        });
        let mut child = Command::new("python3")
            .arg(conformance_script())
            .args(["--http", &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("service announces itself");
        assert!(line.starts_with("listening"), "service said {line:?}");
        Self { child, port }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its JSON-RPC endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/rpc", self.port)
    }
}

impl Drop for ConformanceService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
