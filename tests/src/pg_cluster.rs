//! Throwaway PostgreSQL clusters and tmpfs mounts for database-fault tests.
//!
//! - [`PgCluster`]: a private PostgreSQL 15 cluster (its own data directory and port) that
//!   a test may restart, stop and start again without touching the shared test server.
//!   Tests run as root and the server refuses to, so every server command runs as the
//!   `postgres` user (`runuser`). Dropping it stops the server (`-m immediate`) and removes
//!   its directory; clusters left behind by a killed test process are cleaned up by the
//!   next [`PgCluster::start`].
//! - [`TcpProxy`]: a TCP proxy in front of a cluster that can cut the LISTEN sessions
//!   going through it and refuse new connections for a while.
//! - [`Tmpfs`]: a small tmpfs mounted on a fresh directory (root only), to make a SQLite
//!   file read-only or its disk full; unmounted when dropped.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Where the PostgreSQL 15 server binaries are.
pub const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Directory name prefix of every private cluster under `/tmp`.
const CLUSTER_PREFIX: &str = "morpheus-pgc-";

/// A private PostgreSQL cluster on `127.0.0.1:<port>`, user `morpheus`, trust auth.
pub struct PgCluster {
    root: PathBuf,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    Path::new(PG_BIN_DIR).join(name)
}

/// Runs `program args…` as the `postgres` user and returns its output.
fn run_as_postgres(program: &Path, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("run {} as postgres: {error}", program.display()))
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A TCP port nothing listens on right now (the kernel's pick; it may be taken again
/// before the server binds it, which [`PgCluster::start`] retries).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .expect("run chown");
    assert!(
        status.success(),
        "chown -R postgres:postgres {}",
        path.display()
    );
}

/// Stops and removes clusters whose creating test process is gone.
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(CLUSTER_PREFIX) {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join("owner.pid"))
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        let Some(owner) = owner else { continue };
        if kill(Pid::from_raw(owner), None) == Err(nix::errno::Errno::ESRCH) {
            let data = entry.path().join("data");
            let data = data.display().to_string();
            let _ = run_as_postgres(&pg_bin("pg_ctl"), &["-D", &data, "stop", "-m", "immediate"]);
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl PgCluster {
    /// `initdb`s a fresh cluster under `/tmp/morpheus-pgc-<random>/` and starts it on a
    /// free port (waiting until it accepts connections).
    ///
    /// # Panics
    /// If the PostgreSQL binaries are missing or the server does not start.
    pub fn start() -> Self {
        assert!(
            pg_bin("initdb").is_file(),
            "{} not found: the fault tests need the PostgreSQL 15 server binaries",
            pg_bin("initdb").display()
        );
        remove_orphans();
        let root =
            Path::new("/tmp").join(format!("{CLUSTER_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&root).expect("create the cluster directory");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the cluster directory");
        std::fs::write(root.join("owner.pid"), std::process::id().to_string())
            .expect("write owner.pid");
        std::fs::create_dir(root.join("data")).expect("create the data directory");
        chown_postgres(&root);
        let mut cluster = Self { root, port: 0 };
        let data = cluster.data_dir().display().to_string();
        let initdb = run_as_postgres(
            &pg_bin("initdb"),
            &[
                "-D",
                &data,
                "-U",
                "morpheus",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
        );
        assert!(initdb.status.success(), "initdb: {}", describe(&initdb));
        // The kernel's free port may be grabbed before the server binds it: retry.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            let started = cluster.pg_ctl(&["start", "-w", "-t", "60"]);
            if started.status.success() {
                return cluster;
            }
            last = format!(
                "{}\nserver log:\n{}",
                describe(&started),
                cluster.server_log()
            );
        }
        panic!("pg_ctl start failed five times: {last}");
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The server's own log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://morpheus@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://morpheus@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data_dir().display().to_string();
        let log = self.log_path().display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.root.display()
        );
        let mut full = vec!["-D", &data, "-l", &log, "-o", &options];
        full.extend_from_slice(args);
        run_as_postgres(&pg_bin("pg_ctl"), &full)
    }

    fn pg_ctl_ok(&self, what: &str, args: &[&str]) {
        let output = self.pg_ctl(args);
        assert!(
            output.status.success(),
            "pg_ctl {what}: {}\nserver log:\n{}",
            describe(&output),
            self.server_log()
        );
    }

    /// `pg_ctl restart -m fast -w`: every session is terminated, the server comes back on
    /// the same port. Returns how long the restart took.
    pub fn restart(&self) -> Duration {
        let started = Instant::now();
        self.pg_ctl_ok("restart", &["restart", "-m", "fast", "-w", "-t", "60"]);
        started.elapsed()
    }

    /// `pg_ctl stop -m fast -w`: the server is down until [`PgCluster::start_again`].
    pub fn stop(&self) {
        self.pg_ctl_ok("stop", &["stop", "-m", "fast", "-w", "-t", "60"]);
    }

    /// Starts the stopped server again on the same port.
    pub fn start_again(&self) {
        self.pg_ctl_ok("start", &["start", "-w", "-t", "60"]);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A tmpfs mounted on a fresh directory under `/tmp`; unmounted (lazily, if busy) and
/// removed when dropped. Needs root (CAP_SYS_ADMIN).
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"2m"`), or says why it cannot.
    pub fn mount(size: &str) -> Result<Self, String> {
        let dir =
            Path::new("/tmp").join(format!("morpheus-tmpfs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).map_err(|error| format!("mkdir {}: {error}", dir.display()))?;
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("run mount: {error}"))?;
        if !output.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mount -t tmpfs failed (not root, or no CAP_SYS_ADMIN here?): {}",
                describe(&output)
            ));
        }
        Ok(Self { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `mount -o remount,<options>` (e.g. `"ro"`, `"rw"`, `"size=64m"`).
    ///
    /// # Panics
    /// If the remount fails.
    pub fn remount(&self, options: &str) {
        let output = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "mount -o remount,{options} {}: {}",
            self.dir.display(),
            describe(&output)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A TCP proxy in front of a server port, for faults the server cannot make on its own:
/// end one kind of session with a clean EOF and refuse new connections for a while,
/// leaving every other session alone (as a pooler or load balancer restart would).
///
/// Sessions whose client has sent `LISTEN ` are tagged as listener sessions.
pub struct TcpProxy {
    port: u16,
    shared: std::sync::Arc<ProxyShared>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct ProxyShared {
    stop: std::sync::atomic::AtomicBool,
    accepting: std::sync::atomic::AtomicBool,
    sessions: std::sync::Mutex<Vec<ProxySession>>,
}

struct ProxySession {
    client: std::net::TcpStream,
    server: std::net::TcpStream,
    listener: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ProxySession {
    fn close(&self) {
        let _ = self.client.shutdown(std::net::Shutdown::Both);
        let _ = self.server.shutdown(std::net::Shutdown::Both);
    }
}

/// Copies `from` to `to` until either side ends; if `tag` is set, sets it once the
/// bytes contain `LISTEN ` (a simple-protocol `LISTEN` query).
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    tag: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
) {
    use std::io::{Read as _, Write as _};
    let mut buf = [0u8; 16 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(tag) = &tag {
            tail.extend_from_slice(&buf[..n]);
            if tail.windows(7).any(|w| w == b"LISTEN ") {
                tag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            let keep = tail.len().saturating_sub(6);
            tail.drain(..keep);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to
    /// `127.0.0.1:<upstream>`.
    pub fn start(upstream: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = std::sync::Arc::new(ProxyShared::default());
        shared.accepting.store(true, Ordering::SeqCst);
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut listener = Some(listener);
                while !shared.stop.load(Ordering::SeqCst) {
                    let accepting = shared.accepting.load(Ordering::SeqCst);
                    if !accepting {
                        // Closed: connection attempts are refused.
                        listener = None;
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    if listener.is_none() {
                        match TcpListener::bind(("127.0.0.1", port)) {
                            Ok(bound) => listener = Some(bound),
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        }
                    }
                    let bound = listener.as_ref().expect("bound");
                    bound.set_nonblocking(true).expect("nonblocking accept");
                    let client = match bound.accept() {
                        Ok((client, _)) => client,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    let tag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
                        client.try_clone(),
                        server.try_clone(),
                        client.try_clone(),
                        server.try_clone(),
                    ) else {
                        continue;
                    };
                    let up_tag = tag.clone();
                    std::thread::spawn(move || pump(c2, s2, Some(up_tag)));
                    std::thread::spawn(move || pump(s3, c3, None));
                    shared
                        .sessions
                        .lock()
                        .expect("sessions")
                        .push(ProxySession {
                            client,
                            server,
                            listener: tag,
                        });
                }
            })
        };
        Self {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops accepting (new connections are refused) or starts again on the same port.
    pub fn set_accepting(&self, accepting: bool) {
        self.shared
            .accepting
            .store(accepting, std::sync::atomic::Ordering::SeqCst);
        // Let the acceptor thread close or rebind the port.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Ends every listener session (both sides see a clean EOF); returns how many.
    pub fn cut_listener_sessions(&self) -> usize {
        let mut sessions = self.shared.sessions.lock().expect("sessions");
        let (cut, kept): (Vec<_>, Vec<_>) = sessions
            .drain(..)
            .partition(|s| s.listener.load(std::sync::atomic::Ordering::SeqCst));
        for session in &cut {
            session.close();
        }
        *sessions = kept;
        cut.len()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for session in self.shared.sessions.lock().expect("sessions").iter() {
            session.close();
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}
