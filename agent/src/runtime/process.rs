//! The process runtime: native executables supervised by the agent.
//!
//! Each Instance has a directory `<data>/instances/<ns>_<name>/` holding `state.json`
//! (pid, the kernel's start time of that pid, start and exit) and `log` (stdout and
//! stderr). The process runs in its own process group and, where cgroups are writable,
//! in its own cgroup with the Instance's cpu and memory limits. The agent waits for the
//! processes it started; processes it finds after a restart are adopted by pid and
//! start time (a recycled pid is not mistaken for them).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crds::Workload;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{InstanceId, Runtime, RuntimeError, State};
use crate::cgroup::Cgroups;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: tells a recycled pid apart.
    proc_start: u64,
    started: DateTime<Utc>,
    exit: Option<Exit>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Exit {
    code: Option<i32>,
    oom_killed: bool,
    finished: DateTime<Utc>,
}

/// Runs native executables as supervised process groups (see the module docs).
pub struct ProcessRuntime {
    dir: PathBuf,
    cgroups: Arc<Cgroups>,
    /// Told the id of every Instance whose process exits.
    exits: mpsc::UnboundedSender<InstanceId>,
}

fn io(instance: &InstanceId, step: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let instance = instance.to_string();
    move |source| RuntimeError::Io {
        instance,
        step,
        source,
    }
}

/// The start time of `pid` in clock ticks, if it is alive (not a zombie).
fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl ProcessRuntime {
    /// Keep Instances under `dir`; limits through `cgroups`; exits are sent to `exits`.
    pub fn new(
        dir: &Path,
        cgroups: Cgroups,
        exits: mpsc::UnboundedSender<InstanceId>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("instances"))?;
        Ok(ProcessRuntime {
            dir: dir.join("instances"),
            cgroups: Arc::new(cgroups),
            exits,
        })
    }

    fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.dir.join(id.token())
    }

    fn read(&self, id: &InstanceId) -> Option<Record> {
        let text = std::fs::read_to_string(self.instance_dir(id).join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write(dir: &Path, record: &Record) -> std::io::Result<()> {
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(record).expect("records serialize"))?;
        std::fs::rename(tmp, dir.join("state.json"))
    }

    fn state_of(record: &Record) -> State {
        let runtime_id = record.pid.to_string();
        match &record.exit {
            Some(e) => State::Exited {
                runtime_id,
                code: e.code,
                oom_killed: e.oom_killed,
                started: record.started,
                finished: e.finished,
            },
            None if proc_start(record.pid) == Some(record.proc_start) => State::Running {
                runtime_id,
                started: record.started,
            },
            // It ended while nobody was waiting for it (the agent was down).
            None => State::Exited {
                runtime_id,
                code: None,
                oom_killed: false,
                started: record.started,
                finished: Utc::now(),
            },
        }
    }
}

/// argv of a workload: the executable (or the first word of `command`), then the rest of
/// `command`, then `args`.
pub fn argv(w: &Workload) -> Option<Vec<String>> {
    let mut argv: Vec<String> = match &w.executable {
        Some(e) if !e.is_empty() => std::iter::once(e.clone())
            .chain(w.command.iter().cloned())
            .collect(),
        _ => w.command.clone(),
    };
    argv.extend(w.args.iter().cloned());
    (!argv.is_empty()).then_some(argv)
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn kinds(&self) -> Vec<crds::RuntimeKind> {
        vec![crds::RuntimeKind::Process]
    }

    async fn start(
        &self,
        id: &InstanceId,
        workload: &Workload,
        env: &[(String, String)],
    ) -> Result<State, RuntimeError> {
        let argv = argv(workload).ok_or_else(|| RuntimeError::Start {
            instance: id.to_string(),
            message: "no executable or command".into(),
        })?;
        let dir = self.instance_dir(id);
        std::fs::create_dir_all(&dir).map_err(io(id, "creating the instance directory"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log"))
            .map_err(io(id, "opening the log"))?;
        let procs = self
            .cgroups
            .create(&id.token(), &workload.resources)
            .map_err(io(id, "creating the cgroup"))?;
        // Join the cgroups before exec, through the shell, so nothing runs unlimited.
        let mut command = if procs.is_empty() {
            let mut c = tokio::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        } else {
            let joins: String = procs
                .iter()
                .map(|p| format!("echo $$ > '{}' && ", p.display()))
                .collect();
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c")
                .arg(format!("{joins}exec \"$@\""))
                .arg("sh")
                .args(&argv);
            c
        };
        command
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .envs(env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .envs(
                workload
                    .env
                    .iter()
                    .map(|e| (e.name.clone(), e.value.clone())),
            )
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io(id, "opening the log"))?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command.spawn().map_err(|e| RuntimeError::Start {
            instance: id.to_string(),
            message: format!("{}: {e}", argv[0]),
        })?;
        let pid = child.id().unwrap_or_default();
        let record = Record {
            pid,
            proc_start: proc_start(pid).unwrap_or_default(),
            started: Utc::now(),
            exit: None,
        };
        Self::write(&dir, &record).map_err(io(id, "writing the state"))?;
        // Wait for it and record how it ended.
        let (cgroups, exits, id2) = (self.cgroups.clone(), self.exits.clone(), id.clone());
        tokio::spawn(async move {
            let status = child.wait().await;
            let code = status.ok().and_then(|s| {
                use std::os::unix::process::ExitStatusExt;
                s.code().or_else(|| s.signal().map(|sig| 128 + sig))
            });
            let mut record = record;
            record.exit = Some(Exit {
                code,
                oom_killed: cgroups.oom_killed(&id2.token()),
                finished: Utc::now(),
            });
            if dir.exists() {
                let _ = Self::write(&dir, &record);
            }
            let _ = exits.send(id2);
        });
        Ok(State::Running {
            runtime_id: pid.to_string(),
            started: Utc::now(),
        })
    }

    async fn state(&self, id: &InstanceId) -> Result<Option<State>, RuntimeError> {
        Ok(self.read(id).map(|r| Self::state_of(&r)))
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        if let Some(record) = self.read(id) {
            if record.exit.is_none() && proc_start(record.pid) == Some(record.proc_start) {
                use nix::sys::signal::{killpg, Signal};
                use nix::unistd::Pid;
                let group = Pid::from_raw(record.pid as i32);
                let _ = killpg(group, Signal::SIGTERM);
                for _ in 0..50 {
                    if proc_start(record.pid) != Some(record.proc_start) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = killpg(group, Signal::SIGKILL);
                for _ in 0..50 {
                    if proc_start(record.pid) != Some(record.proc_start) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Ok(())
    }

    async fn remove(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        self.stop(id).await?;
        self.cgroups.remove(&id.token());
        match std::fs::remove_dir_all(self.instance_dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(id, "removing the instance directory")(e))
            }
            _ => Ok(()),
        }
    }

    async fn list(&self) -> Result<Vec<InstanceId>, RuntimeError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| RuntimeError::Io {
            instance: "*".into(),
            step: "listing instances",
            source,
        })?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| InstanceId::from_token(&e.file_name().to_string_lossy()))
            .collect())
    }

    fn log_path(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("log")
    }
}
