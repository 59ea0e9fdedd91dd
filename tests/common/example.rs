//! The examples run as a user runs them: their binaries (`target/<profile>/examples/NAME`,
//! which `cargo test` builds before it runs the integration tests), started with real
//! command lines, reached over real sockets, stopped by a signal.
//!
//! `cargo test --test NAME` alone does not build the examples: run `cargo build --examples`
//! first (a binary older than its source is refused, so a stale one never passes a test).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
};

use super::{LIVENESS, within_for};

/// How long an example may take to start: the demo may generate an RSA key and hash
/// passwords first, work a loaded machine stretches well past [`LIVENESS`].
pub const START: Duration = Duration::from_secs(120);

/// The path of the example `name`'s binary, beside the test binary's directory.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/examples/<name>
    let profile = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>");
    let bin = profile
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    // `examples/NAME.rs`, or the newest file of `examples/NAME/`.
    let written = modified(&examples.join(format!("{name}.rs"))).or_else(|| {
        let dir = std::fs::read_dir(examples.join(name)).ok()?;
        dir.filter_map(|entry| modified(&entry.ok()?.path())).max()
    });
    match (modified(&bin), written) {
        (Some(built), Some(written)) if built >= written => bin,
        (Some(_), _) => panic!(
            "{} is older than its source in examples/: run `cargo build --example {name}`",
            bin.display()
        ),
        (None, _) => panic!(
            "{} is missing: run `cargo test` (which builds the examples) or \
             `cargo build --example {name}`",
            bin.display()
        ),
    }
}

/// A running example; killed when dropped.
#[derive(Debug)]
pub struct Example {
    /// Where it listens (its first line on stdout, `listening on http://ADDR`).
    pub addr: SocketAddr,
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Example {
    /// Starts the example `name` with `args` and waits for its `listening on` line; fails
    /// the test, with the example's stderr, if it exits first.
    pub async fn start(name: &str, args: &[&str]) -> Self {
        match Self::try_start(name, args).await {
            Ok(example) => example,
            Err((status, stderr)) => panic!("{name} {args:?} exited ({status:?}):\n{stderr}"),
        }
    }

    /// [`Self::start`], or how it exited before listening, and its stderr.
    pub async fn try_start(
        name: &str,
        args: &[&str],
    ) -> Result<Self, (Option<ExitStatus>, String)> {
        let mut child = Command::new(example_bin(name))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the example starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped stderr");
        let collected = Arc::clone(&stderr);
        // Read all along: a full pipe would block the example's logging.
        let drained = tokio::spawn(async move {
            let mut buf = vec![0; 8192];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                collected.lock().expect("stderr").push_str(&text);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = within_for(START, "the example prints its address", lines.next_line()).await;
        let addr = first.ok().flatten().and_then(|line| {
            line.strip_prefix("listening on http://")
                .and_then(|a| a.parse::<SocketAddr>().ok())
        });
        let Some(addr) = addr else {
            let status = within_for(START, "the example exits", child.wait())
                .await
                .ok();
            let _ = within_for(LIVENESS, "its stderr", drained).await;
            let stderr = stderr.lock().expect("stderr").clone();
            return Err((status, stderr));
        };
        // Nothing else is expected on stdout; keep the pipe open and drained.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            addr,
            child,
            stderr,
        })
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Sends it SIGTERM (what an orchestrator sends to stop it).
    pub fn terminate(&self) {
        let pid = self.child.id().expect("still running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid}");
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("its status").is_none()
    }

    /// Waits for it to exit (within [`START`]): its status and stderr.
    pub async fn exited(mut self) -> (ExitStatus, String) {
        let status = within_for(START, "the example exits", self.child.wait())
            .await
            .expect("its status");
        // Whatever it wrote last is read once its pipe is closed.
        within_for(LIVENESS, "its last stderr", async {
            while Arc::strong_count(&self.stderr) > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        (status, self.stderr())
    }
}

/// Runs the example `name` with `args`, which must fail before it listens: its stderr.
pub async fn example_fails(name: &str, args: &[&str]) -> String {
    match Example::try_start(name, args).await {
        Ok(example) => panic!("{name} {args:?} started on {}", example.addr),
        Err((status, stderr)) => {
            assert!(
                status.is_some_and(|s| !s.success()),
                "{name} {args:?}: {status:?}\n{stderr}"
            );
            stderr
        }
    }
}
