//! Real `redis-server` and `memcached` processes for tests, on free loopback ports.
//!
//! [`TestServer::redis`] and [`TestServer::memcached`] start a server as a child process, wait
//! until it accepts connections, and stop it when dropped. Each server runs under a small shell
//! wrapper that reads the test process's end of a pipe: when the test process exits, even without
//! running destructors (a `static` server, a panic in another thread), the pipe closes and the
//! wrapper stops the server, so no server outlives its tests.
//!
//! Environment:
//!
//! | variable | effect |
//! |---|---|
//! | `CACHE_TESTS_REDIS_URL` | use this Redis instead of starting one (restart tests are skipped) |
//! | `CACHE_TESTS_MEMCACHED_ADDR` | use this memcached (`host:port`) instead of starting one |
//! | `CACHE_TESTS_REDIS_SERVER`, `CACHE_TESTS_MEMCACHED_BIN` | the binaries to run (default: from `PATH`) |
//! | `CI` | when `true`, a missing binary fails the test instead of skipping it |
//!
//! A test never flushes or relies on a server it did not start: with an external server, tests
//! work only in their own random namespaces.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerKind {
    /// `redis-server`.
    Redis,
    /// `memcached`.
    Memcached,
    /// `redis-server --sentinel`, monitoring a master (see
    /// [`TestServer::sentinel`]).
    Sentinel,
}

impl ServerKind {
    fn binary_var(self) -> &'static str {
        match self {
            Self::Redis | Self::Sentinel => "CACHE_TESTS_REDIS_SERVER",
            Self::Memcached => "CACHE_TESTS_MEMCACHED_BIN",
        }
    }

    fn default_binary(self) -> &'static str {
        match self {
            Self::Redis | Self::Sentinel => "redis-server",
            Self::Memcached => "memcached",
        }
    }

    fn external_var(self) -> &'static str {
        match self {
            Self::Redis | Self::Sentinel => "CACHE_TESTS_REDIS_URL",
            Self::Memcached => "CACHE_TESTS_MEMCACHED_ADDR",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Self::Redis | Self::Sentinel => "redis-server",
            Self::Memcached => "memcached",
        }
    }
}

/// A server for tests: started by the harness, or named by the environment.
#[derive(Debug)]
pub struct TestServer {
    kind: ServerKind,
    port: u16,
    host: String,
    external: Option<String>,
    extra_args: Vec<String>,
    /// Whether it also listens on a Unix domain socket (memcached: only there).
    unix: bool,
    process: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    wrapper: Child,
    /// Kept open: the wrapper stops the server when this end closes.
    _lifeline: ChildStdin,
    pid: u32,
}

/// Why a test server is not available.
#[derive(Debug)]
pub enum Unavailable {
    /// The binary is not installed; the message says how to install it.
    Missing(String),
    /// It was found but did not start.
    Failed(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(m) | Self::Failed(m) => f.write_str(m),
        }
    }
}

impl TestServer {
    /// Starts a `redis-server` (`--save '' --appendonly no`) on a free loopback port, or uses
    /// `CACHE_TESTS_REDIS_URL`.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when the binary is missing or the server does not start.
    pub fn redis() -> Result<Self, Unavailable> {
        Self::start(ServerKind::Redis, &[])
    }

    /// Starts a `memcached` on a free loopback port, or uses `CACHE_TESTS_MEMCACHED_ADDR`.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when the binary is missing or the server does not start.
    pub fn memcached() -> Result<Self, Unavailable> {
        Self::start(ServerKind::Memcached, &[])
    }

    /// Starts a server of `kind` with extra command-line arguments (never an external one).
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when the binary is missing or the server does not start.
    pub fn start(kind: ServerKind, extra_args: &[&str]) -> Result<Self, Unavailable> {
        Self::start_with(kind, extra_args, true)
    }

    /// Starts a server of `kind` with extra arguments, always one of the harness's own (never
    /// the external one the environment may name): for tests that stop, freeze or flush it.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when the binary is missing or the server does not start.
    pub fn start_owned(kind: ServerKind, extra_args: &[&str]) -> Result<Self, Unavailable> {
        Self::start_with(kind, extra_args, false)
    }

    /// `count` memcached servers of the harness's own, for tests of an engine over several.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when the binary is missing or a server does not start.
    pub fn memcached_set(count: usize) -> Result<Vec<Self>, Unavailable> {
        (0..count)
            .map(|_| Self::start_owned(ServerKind::Memcached, &[]))
            .collect()
    }

    /// Three memcached servers shared by every test of this process, started on first use
    /// (`None` as [`shared`](Self::shared)).
    ///
    /// # Panics
    ///
    /// As [`shared`](Self::shared).
    pub fn shared_memcached_set() -> Option<Arc<Vec<TestServer>>> {
        static SET: OnceLock<Option<Arc<Vec<TestServer>>>> = OnceLock::new();
        SET.get_or_init(|| Self::memcached_set(3).map(Arc::new).or_skip())
            .clone()
    }

    fn start_with(
        kind: ServerKind,
        extra_args: &[&str],
        external_allowed: bool,
    ) -> Result<Self, Unavailable> {
        if extra_args.is_empty() && external_allowed {
            if let Ok(external) = std::env::var(kind.external_var()) {
                return Ok(Self {
                    kind,
                    port: 0,
                    host: String::new(),
                    external: Some(external),
                    extra_args: Vec::new(),
                    unix: false,
                    process: Mutex::new(None),
                });
            }
        }
        find_binary(kind)?;
        on_a_free_port(|port| Self {
            kind,
            port,
            host: "127.0.0.1".into(),
            external: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            unix: false,
            process: Mutex::new(None),
        })
    }

    /// A server of the harness's own listening on a Unix domain socket in its working
    /// directory ([`unix_socket`](Self::unix_socket)): Redis also on its loopback port,
    /// memcached only on the socket (its `-s` turns the network off).
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when the binary is missing or the server does not start.
    pub fn start_unix(kind: ServerKind) -> Result<Self, Unavailable> {
        find_binary(kind)?;
        on_a_free_port(|port| Self {
            kind,
            port,
            host: "127.0.0.1".into(),
            external: None,
            extra_args: Vec::new(),
            unix: true,
            process: Mutex::new(None),
        })
    }

    /// A memcached of the harness's own speaking TLS (`-Z`, with `cert` and `key`, PEM) on the
    /// returned port, with ASCII authentication (`-Y auth_file`, `user:password` lines) when
    /// given one. It also listens without TLS on [`address`](Self::address), where the harness
    /// checks that it is up.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when the binary is missing or the server does not start.
    pub fn memcached_tls(
        cert: &str,
        key: &str,
        auth_file: Option<&str>,
    ) -> Result<(Self, u16), Unavailable> {
        find_binary(ServerKind::Memcached)?;
        let mut tls_port = 0;
        let server = on_a_free_port(|port| {
            tls_port = free_port().unwrap_or(0);
            Self::memcached_tls_on(port, tls_port, cert, key, auth_file)
        })?;
        Ok((server, tls_port))
    }

    fn memcached_tls_on(
        port: u16,
        tls_port: u16,
        cert: &str,
        key: &str,
        auth_file: Option<&str>,
    ) -> Self {
        let mut extra_args = vec![
            "-Z".to_string(),
            "-o".to_string(),
            format!("ssl_chain_cert={cert},ssl_key={key}"),
            "-l".to_string(),
            format!("notls:127.0.0.1:{port},127.0.0.1:{tls_port}"),
        ];
        if let Some(file) = auth_file {
            extra_args.extend(["-Y".to_string(), file.to_string()]);
        }
        Self {
            kind: ServerKind::Memcached,
            port,
            host: "127.0.0.1".into(),
            external: None,
            extra_args,
            unix: false,
            process: Mutex::new(None),
        }
    }

    /// The path of the server's Unix domain socket, if it listens on one.
    pub fn unix_socket(&self) -> Option<PathBuf> {
        self.unix.then(|| self.work_dir().join("server.sock"))
    }

    /// A URL for the server's Unix domain socket: `redis+unix:///PATH` or
    /// `memcached+unix:///PATH`.
    pub fn unix_url(&self) -> Option<String> {
        let path = self.unix_socket()?;
        let scheme = match self.kind {
            ServerKind::Memcached => "memcached+unix",
            ServerKind::Redis | ServerKind::Sentinel => "redis+unix",
        };
        Some(format!("{scheme}://{}", path.display()))
    }

    /// Where readiness is probed: the socket for a memcached that listens only there.
    fn probe_address(&self) -> String {
        match self.unix_socket() {
            Some(path) if self.kind == ServerKind::Memcached => format!("unix:{}", path.display()),
            _ => self.address(),
        }
    }

    /// A sentinel monitoring the master at `master` (`host:port`) under `name`, with a quorum of
    /// 2, taking a master down after 1 s without answers.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when `redis-server` is missing or the sentinel does not start.
    pub fn sentinel(master: &str, name: &str) -> Result<Self, Unavailable> {
        let (host, port) = master
            .rsplit_once(':')
            .ok_or_else(|| Unavailable::Failed(format!("not host:port: {master}")))?;
        Self::start_owned(ServerKind::Sentinel, &[name, host, port])
    }

    /// A server of `kind` shared by every test of this process, started on first use.
    ///
    /// Returns `None` (after printing how to install the binary) when the binary is missing
    /// outside CI.
    ///
    /// # Panics
    ///
    /// When the server cannot be started, and in CI (`CI=true`) when the binary is missing.
    pub fn shared(kind: ServerKind) -> Option<Arc<TestServer>> {
        static REDIS: OnceLock<Option<Arc<TestServer>>> = OnceLock::new();
        static MEMCACHED: OnceLock<Option<Arc<TestServer>>> = OnceLock::new();
        let cell = match kind {
            ServerKind::Redis | ServerKind::Sentinel => &REDIS,
            ServerKind::Memcached => &MEMCACHED,
        };
        cell.get_or_init(|| Self::start(kind, &[]).map(Arc::new).or_skip())
            .clone()
    }

    /// The kind of server.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// `host:port` of the server.
    pub fn address(&self) -> String {
        match &self.external {
            Some(external) => external
                .trim_start_matches("redis://")
                .trim_start_matches("memcached://")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    /// A URL for the server: `redis://127.0.0.1:PORT` or `memcached://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match (&self.external, self.kind) {
            (Some(external), ServerKind::Redis) => external.clone(),
            (_, ServerKind::Redis | ServerKind::Sentinel) => format!("redis://{}", self.address()),
            (_, ServerKind::Memcached) => format!("memcached://{}", self.address()),
        }
    }

    /// Whether the harness started this server (and so may stop, restart or flush it).
    pub fn is_owned(&self) -> bool {
        self.external.is_none()
    }

    /// The server's process id, when the harness started it.
    pub fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(|r| r.pid)
    }

    /// Stops the server (killing it), keeping its port for [`restart`](Self::restart).
    pub fn stop(&self) {
        if let Some(mut running) = self.lock().take() {
            let _ = Command::new("kill")
                .args(["-KILL", &running.pid.to_string()])
                .stderr(Stdio::null())
                .status();
            let _ = running.wrapper.kill();
            let _ = running.wrapper.wait();
            wait_until_closed(&self.probe_address(), Duration::from_secs(5));
        }
    }

    /// Starts the server again on the same port after [`stop`](Self::stop).
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when it does not come back.
    pub fn restart(&self) -> Result<(), Unavailable> {
        self.stop();
        self.launch()
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the server process. After `STOP` it returns
    /// once every thread of the server has stopped, after `CONT` once none is stopped (within
    /// 2 s, on Linux): a signal is delivered asynchronously, and on a busy machine a request
    /// sent right after `kill -STOP` returned could still be served.
    pub fn signal(&self, signal: &str) {
        let Some(pid) = self.pid() else { return };
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status();
        let want_stopped = match signal {
            "STOP" => true,
            "CONT" => false,
            _ => return,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            match threads_stopped(pid) {
                Some(stopped) if stopped != want_stopped => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => return,
            }
        }
    }

    /// The server's statistics, as `name value` pairs: Redis's `INFO all` (lines such as
    /// `connected_clients:3`, and `cmdstat_get` as `calls=12,...`), memcached's `stats`.
    /// `None` when the server does not answer within a second.
    pub fn stats(&self) -> Option<Vec<(String, String)>> {
        let addr = self.address().to_socket_addrs().ok()?.next()?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let request: &[u8] = match self.kind {
            ServerKind::Redis | ServerKind::Sentinel => b"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n",
            ServerKind::Memcached => b"stats\r\n",
        };
        stream.write_all(request).ok()?;
        let mut reader = BufReader::new(stream);
        let mut pairs = Vec::new();
        let mut line = String::new();
        if matches!(self.kind, ServerKind::Redis | ServerKind::Sentinel) {
            reader.read_line(&mut line).ok()?;
            let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
            let mut body = vec![0; len + 2];
            std::io::Read::read_exact(&mut reader, &mut body).ok()?;
            for line in String::from_utf8_lossy(&body).lines() {
                if let Some((name, value)) = line.split_once(':') {
                    pairs.push((name.to_string(), value.to_string()));
                }
            }
            return Some(pairs);
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let text = line.trim_end();
            if text == "END" {
                return Some(pairs);
            }
            let mut words = text.split(' ');
            if let (Some("STAT"), Some(name), Some(value)) =
                (words.next(), words.next(), words.next())
            {
                pairs.push((name.to_string(), value.to_string()));
            }
        }
    }

    /// How many reads of one key the server has served: Redis's `GET` calls, memcached's
    /// `cmd_get` (classic and meta gets). `None` when the server does not answer.
    pub fn gets_served(&self) -> Option<u64> {
        let stats = self.stats()?;
        match self.kind {
            ServerKind::Redis | ServerKind::Sentinel => Some(
                stats
                    .iter()
                    .find(|(name, _)| name == "cmdstat_get")
                    .and_then(|(_, value)| {
                        value
                            .split(',')
                            .find_map(|part| part.strip_prefix("calls="))
                            .and_then(|calls| calls.parse().ok())
                    })
                    .unwrap_or(0),
            ),
            ServerKind::Memcached => stats
                .iter()
                .find(|(name, _)| name == "cmd_get")
                .and_then(|(_, value)| value.parse().ok()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.process.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn launch(&self) -> Result<(), Unavailable> {
        if !self.is_owned() {
            return Ok(());
        }
        let binary = find_binary(self.kind)?;
        let port = self.port.to_string();
        // Redis writes dump files (on SHUTDOWN, on a replica's sync) into its working
        // directory: give it one of its own, never the repository.
        let dir = self.work_dir();
        let _ = std::fs::create_dir_all(&dir);
        let dir = dir.to_string_lossy().into_owned();
        let mut args: Vec<String> = match self.kind {
            ServerKind::Redis => [
                "--dir",
                &dir,
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            ServerKind::Sentinel => {
                let [name, host, master_port] = self.extra_args.as_slice() else {
                    return Err(Unavailable::Failed(
                        "a sentinel needs a master name, host and port".into(),
                    ));
                };
                let conf = self.work_dir().join("sentinel.conf");
                let text = format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {name} {host} {master_port} 2\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 4000\n\
                     sentinel parallel-syncs {name} 1\n"
                );
                std::fs::write(&conf, text).map_err(|e| {
                    Unavailable::Failed(format!("cannot write {}: {e}", conf.display()))
                })?;
                vec![
                    conf.to_string_lossy().into_owned(),
                    "--sentinel".into(),
                    "--loglevel".into(),
                    "warning".into(),
                ]
            }
            ServerKind::Memcached => {
                let mut args: Vec<String> = ["-p", &port, "-U", "0", "-m", "64"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                // Loopback only, unless the caller names its own listeners.
                if !self.extra_args.iter().any(|arg| arg == "-l") {
                    args.extend(["-l".to_string(), "127.0.0.1".to_string()]);
                }
                // memcached refuses to run as root without naming a user to run as.
                if running_as_root() {
                    args.extend(["-u".to_string(), "root".to_string()]);
                }
                args
            }
        };
        if self.kind != ServerKind::Sentinel {
            args.extend(self.extra_args.iter().cloned());
        }
        if let Some(socket) = self.unix_socket() {
            let socket = socket.to_string_lossy().into_owned();
            let _ = std::fs::remove_file(&socket);
            match self.kind {
                ServerKind::Memcached => {
                    args.extend(["-s".into(), socket, "-a".into(), "0700".into()])
                }
                ServerKind::Redis | ServerKind::Sentinel => args.extend([
                    "--unixsocket".into(),
                    socket,
                    "--unixsocketperm".into(),
                    "700".into(),
                ]),
            }
        }
        // The wrapper starts the server, prints its pid, and stops it when stdin closes.
        let script = r#"bin="$1"; shift; "$bin" "$@" >/dev/null 2>&1 & child=$!; echo "$child"; cat >/dev/null; kill -9 "$child" 2>/dev/null; wait "$child" 2>/dev/null"#;
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("cache-tests-server")
            .arg(&binary)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                Unavailable::Failed(format!("cannot run sh to start {}: {e}", binary.display()))
            })?;
        let lifeline = wrapper
            .stdin
            .take()
            .ok_or_else(|| Unavailable::Failed("no stdin pipe to the server wrapper".into()))?;
        let mut first_line = String::new();
        if let Some(stdout) = wrapper.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut first_line);
        }
        let pid: u32 = first_line
            .trim()
            .parse()
            .map_err(|_| Unavailable::Failed(format!("{} did not start", binary.display())))?;
        *self.lock() = Some(Running {
            wrapper,
            _lifeline: lifeline,
            pid,
        });
        match wait_until_ready(
            self.kind,
            &self.probe_address(),
            Duration::from_secs(10),
            pid,
        ) {
            Ready::Yes => Ok(()),
            Ready::Exited => {
                self.stop();
                Err(Unavailable::Failed(format!(
                    "{} {} {EXITED} (a port taken between choosing and binding it?)",
                    binary.display(),
                    args.join(" "),
                )))
            }
            Ready::TimedOut => {
                self.stop();
                Err(Unavailable::Failed(format!(
                    "{} {} did not accept connections on {} within 10 s",
                    binary.display(),
                    args.join(" "),
                    self.probe_address()
                )))
            }
        }
    }
}

impl TestServer {
    /// The server's own working directory, under the system's temporary directory.
    fn work_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!(
            "cache-tests-{}-{}-{}",
            std::process::id(),
            self.port,
            match self.kind {
                ServerKind::Redis => "redis",
                ServerKind::Sentinel => "sentinel",
                ServerKind::Memcached => "memcached",
            }
        ))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        if self.is_owned() {
            let _ = std::fs::remove_dir_all(self.work_dir());
        }
    }
}

/// Turns an unavailable server into a loud skip outside CI and a failure in CI.
pub trait OrSkip<T> {
    /// `Some(server)`, or `None` after printing why the test is skipped.
    ///
    /// # Panics
    ///
    /// In CI (`CI=true`) when the server is missing, and whenever it failed to start.
    fn or_skip(self) -> Option<T>;
}

impl<T> OrSkip<T> for Result<T, Unavailable> {
    fn or_skip(self) -> Option<T> {
        match self {
            Ok(server) => Some(server),
            Err(Unavailable::Missing(message)) => {
                if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                    panic!("{message} (CI=true: server tests must run, not be skipped)");
                }
                // Once per process, and past the test harness's capture of `eprintln!`, so that
                // the skip is seen even when every test passes.
                static SAID: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {message} ***\n");
                }
                None
            }
            Err(Unavailable::Failed(message)) => panic!("test server failed: {message}"),
        }
    }
}

fn find_binary(kind: ServerKind) -> Result<PathBuf, Unavailable> {
    let name = std::env::var(kind.binary_var()).unwrap_or_else(|_| kind.default_binary().into());
    let candidate = Path::new(&name);
    if candidate.components().count() > 1 {
        return if candidate.is_file() {
            Ok(candidate.to_path_buf())
        } else {
            Err(missing(kind, &name))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file())
        .ok_or_else(|| missing(kind, &name))
}

fn missing(kind: ServerKind, name: &str) -> Unavailable {
    Unavailable::Missing(format!(
        "`{name}` was not found, so the {kind:?} server tests were skipped; install it with \
         `sudo apt-get install {}` (or run scripts/test, which does), or set {} to a running server",
        kind.package(),
        kind.external_var()
    ))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

pub(crate) fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// What a server's start came to.
enum Ready {
    Yes,
    /// The process ended before it answered.
    Exited,
    TimedOut,
}

/// Words of the error of a server that exited at once, which [`on_a_free_port`] retries.
pub(crate) const EXITED: &str = "exited before it accepted connections";

/// Builds a server on a port chosen free and starts it; when it exits at once (another process
/// took the port between the choice and the bind: ports are chosen by binding port 0 and
/// letting go, and any connection's own port may land on one), tries again on a new port, up
/// to five times.
fn on_a_free_port(mut make: impl FnMut(u16) -> TestServer) -> Result<TestServer, Unavailable> {
    let mut tries = 0;
    loop {
        let port = free_port().map_err(|e| Unavailable::Failed(format!("no free port: {e}")))?;
        let server = make(port);
        match server.launch() {
            Ok(()) => return Ok(server),
            Err(Unavailable::Failed(why)) if why.contains(EXITED) && tries < 4 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Whether every thread of the process `pid` is stopped (`T` or `t`); `None` where `/proc`
/// cannot tell.
fn threads_stopped(pid: u32) -> Option<bool> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut all = true;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        all &= matches!(state, 'T' | 't');
    }
    Some(all)
}

/// Whether the process `pid` still runs (not a zombie); `true` where `/proc` cannot tell.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_none_or(|state| state != 'Z' && state != 'X'),
        Err(_) => !std::path::Path::new("/proc/self").exists(),
    }
}

fn wait_until_ready(kind: ServerKind, address: &str, within: Duration, pid: u32) -> Ready {
    let start = Instant::now();
    while start.elapsed() < within {
        if probe(kind, address) {
            return Ready::Yes;
        }
        if !alive(pid) {
            return Ready::Exited;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ready::TimedOut
}

fn wait_until_closed(address: &str, within: Duration) {
    let start = Instant::now();
    while start.elapsed() < within {
        if connect(address).is_none() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A byte stream to a test server.
trait Probe: Read + Write {}
impl<T: Read + Write> Probe for T {}

/// A connection to `host:port` or `unix:PATH`, with a read timeout; `None` if none opens.
fn connect(address: &str) -> Option<Box<dyn Probe>> {
    let read_timeout = Some(Duration::from_millis(500));
    if let Some(path) = address.strip_prefix("unix:") {
        let stream = std::os::unix::net::UnixStream::connect(path).ok()?;
        let _ = stream.set_read_timeout(read_timeout);
        return Some(Box::new(stream));
    }
    let addr = address.to_socket_addrs().ok()?.next()?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    let _ = stream.set_read_timeout(read_timeout);
    Some(Box::new(stream))
}

/// Sends a ping the server must answer.
fn probe(kind: ServerKind, address: &str) -> bool {
    let Some(mut stream) = connect(address) else {
        return false;
    };
    // A memcached that wants a login (`-Y`) answers `CLIENT_ERROR unauthenticated`: up too.
    let (request, expected): (&[u8], &[&str]) = match kind {
        ServerKind::Redis | ServerKind::Sentinel => (b"PING\r\n", &["+PONG"]),
        ServerKind::Memcached => (b"version\r\n", &["VERSION", "CLIENT_ERROR unauthenticated"]),
    };
    if stream.write_all(request).is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok()
        && expected.iter().any(|start| line.starts_with(start))
}
