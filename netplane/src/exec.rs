//! Running the kernel's configuration tools (`nft`, `ip`, `bridge`, `conntrack`) in a
//! chosen network namespace, with failures that carry the command and its stderr.

use std::ffi::OsStr;
use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

/// Where commands run: the current network namespace, or a named one (`ip netns`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// `None`: the current namespace; `Some(name)`: `/run/netns/<name>`.
    pub netns: Option<String>,
}

/// A command that failed to start or exited non-zero.
#[derive(Debug, thiserror::Error)]
#[error("{command}: {message}")]
pub struct CommandError {
    /// The command line.
    pub command: String,
    /// Its error output (or why it could not start).
    pub message: String,
}

impl Host {
    /// The current network namespace.
    pub fn current() -> Host {
        Host::default()
    }

    /// The namespace `ip netns` calls `name`.
    pub fn netns(name: impl Into<String>) -> Host {
        Host {
            netns: Some(name.into()),
        }
    }

    fn command(&self, program: &str, args: &[&OsStr]) -> (tokio::process::Command, String) {
        let line = std::iter::once(OsStr::new(program))
            .chain(args.iter().copied())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = match &self.netns {
            None => tokio::process::Command::new(program),
            Some(ns) => {
                let mut cmd = tokio::process::Command::new("nsenter");
                cmd.arg(format!(
                    "--net={}",
                    PathBuf::from("/run/netns").join(ns).display()
                ))
                .arg("--")
                .arg(program);
                cmd
            }
        };
        cmd.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let line = match &self.netns {
            None => line,
            Some(ns) => format!("[netns {ns}] {line}"),
        };
        (cmd, line)
    }

    /// Run `program args…` with `input` on stdin; returns its stdout.
    pub async fn run_with_input(
        &self,
        program: &str,
        args: &[&str],
        input: &[u8],
    ) -> Result<String, CommandError> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let (mut cmd, line) = self.command(program, &args);
        let fail = |message: String| CommandError {
            command: line.clone(),
            message,
        };
        let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .await
                .map_err(|e| fail(format!("writing stdin: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(fail(if stderr.is_empty() {
                format!("exited with {}", out.status)
            } else {
                stderr
            }))
        }
    }

    /// Run `program args…`; returns its stdout.
    pub async fn run(&self, program: &str, args: &[&str]) -> Result<String, CommandError> {
        self.run_with_input(program, args, b"").await
    }
}
