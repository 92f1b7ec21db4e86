//! Helpers for running the `palisade` binary in tests: bounded runs, and a child process that
//! is always stopped by its PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test, built by cargo for this test run.
pub(crate) fn palisade() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_palisade"));
    command.current_dir(repo());
    command.env("PALISADE_LOG", "info");
    command
}

/// The repository root (where `examples/` lives).
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `command` to completion, killing it after `limit`.
pub(crate) fn run(mut command: Command, limit: Duration) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("palisade starts");
    let guard = Guard(Some(child));
    wait_bounded(guard, limit)
}

fn wait_bounded(mut guard: Guard, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        let child = guard.0.as_mut().expect("child");
        if child.try_wait().expect("try_wait").is_some() {
            let child = guard.0.take().expect("child");
            return child.wait_with_output().expect("output");
        }
        assert!(
            Instant::now() < deadline,
            "palisade did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Text of stdout and stderr.
pub(crate) fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A child process killed (by its PID) when dropped.
pub(crate) struct Guard(pub(crate) Option<Child>);

impl Guard {
    /// Sends SIGTERM and waits (bounded) for the exit; returns the output.
    pub(crate) fn terminate(mut self, limit: Duration) -> Output {
        let child = self.0.as_mut().expect("child");
        let pid = child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
        wait_bounded(self, limit)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a tool is on PATH. Under `CI=true` a missing tool fails the test; elsewhere the
/// test skips with a printed reason.
pub(crate) fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required in CI (CI=true) but is not installed");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// Writes `text` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}
