//! Harness for `morpheus devnet akash` and `morpheus devnet skip`: a simulator as a child process on a free
//! port, its banner, and a minimal HTTP/1.1 client (the tests crate stays free of an
//! HTTP stack; plain requests to 127.0.0.1 are all it needs).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use crate::morpheus_bin;

/// The simulator's public demo mnemonic (the BIP-39 test vector) behind `--seed-demo`'s
/// wallet.
pub const DEMO_MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

/// A free port on 127.0.0.1 (bound and released; the simulator binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A `morpheus devnet …` simulator running as a child process. Dropping it SIGKILLs it
/// (printing its stderr if the test is panicking).
pub struct DevnetProcess {
    simulator: String,
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The banner lines read so far.
    pub banner: Vec<String>,
    lines: mpsc::Receiver<String>,
    stderr_path: PathBuf,
    _dir: TempDir,
}

impl DevnetProcess {
    /// Starts `morpheus devnet akash --listen 127.0.0.1:<free port> <args>` and waits
    /// (up to 30 s) for the banner's `listening on` line.
    ///
    /// # Panics
    /// If it exits or prints no banner in time.
    pub fn spawn_akash(args: &[&str]) -> Self {
        Self::spawn("akash", args)
    }

    /// Starts `morpheus devnet <simulator> --listen 127.0.0.1:<free port> <args>` (the
    /// Akash or the Skip Go simulator: both print a `listening on http://…` banner
    /// line) and waits up to 30 s for that line.
    ///
    /// # Panics
    /// If it exits or prints no banner in time.
    pub fn spawn(simulator: &str, args: &[&str]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::spawn_on(simulator, addr, args)
    }

    /// Like [`DevnetProcess::spawn`], listening on `addr` (a test that needs the
    /// address before the simulator runs: a dependency that comes up late).
    ///
    /// # Panics
    /// If it exits or prints no banner in time.
    pub fn spawn_on(simulator: &str, addr: SocketAddr, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr_path = dir.path().join("devnet.stderr");
        let mut child = Command::new(morpheus_bin())
            .args(["devnet", simulator, "--listen", &addr.to_string()])
            .args(args)
            .env("MORPHEUS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|error| panic!("spawn morpheus devnet {simulator}: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut devnet = Self {
            simulator: simulator.to_owned(),
            child,
            addr,
            banner: Vec::new(),
            lines,
            stderr_path,
            _dir: dir,
        };
        devnet.wait_for_line("the banner's listening line", |line| {
            line.contains("listening on http://")
        });
        devnet
    }

    /// Reads banner lines until one matches (up to 30 s) and returns it.
    ///
    /// # Panics
    /// If none does in time.
    pub fn wait_for_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.banner.iter().find(|line| matches(line)) {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.banner.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no {what} from morpheus devnet {}; stdout so far: {:?}; stderr: {}",
                    self.simulator,
                    self.banner,
                    self.stderr()
                ),
            }
        }
    }

    /// The demo wallet's address, from the `--seed-demo` banner line
    /// `demo wallet akash1… holds …` (waiting for it up to 30 s).
    ///
    /// # Panics
    /// If the banner has no such line.
    pub fn demo_wallet(&mut self) -> String {
        let line = self.wait_for_line("the demo wallet line", |line| {
            line.starts_with("demo wallet ")
        });
        line.split_whitespace()
            .nth(2)
            .expect("an address after 'demo wallet'")
            .to_owned()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A GET request.
    pub fn get(&self, path: &str) -> HttpResponse {
        http_request(self.addr, "GET", path, None).expect("GET from the simulator")
    }

    /// A GET request whose answer must be 200 with JSON.
    ///
    /// # Panics
    /// On another status or a body that is not JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let response = self.get(path);
        assert_eq!(response.status, 200, "GET {path}: {}", response.body);
        response.json()
    }

    /// A POST request with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> HttpResponse {
        http_request(self.addr, "POST", path, Some(&body.to_string()))
            .expect("POST to the simulator")
    }

    /// SIGTERM, then waits (up to 10 s) for the exit.
    ///
    /// # Panics
    /// If it does not exit in time.
    pub fn terminate(&mut self) -> ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        let what = format!("morpheus devnet {} to exit", self.simulator);
        crate::wait_for(&what, Duration::from_secs(10), || {
            self.child.try_wait().expect("try_wait")
        })
    }
}

impl Drop for DevnetProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- stderr of morpheus devnet {} ---\n{}",
                self.simulator,
                self.stderr()
            );
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
}

impl HttpResponse {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// If it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close` (so the body ends at EOF unless the
/// answer is chunked).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = json_body.unwrap_or("");
    let content = if json_body.is_some() {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    } else {
        String::new()
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{content}\r\n{body}"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(key, value)| key == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
