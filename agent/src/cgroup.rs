//! Resource limits for native processes through cgroups (v2 where the unified hierarchy
//! has the cpu and memory controllers, else v1's cpu and memory hierarchies).
//!
//! Each Instance gets a group `oakestra/<node>/<instance>` so several agents on one
//! machine stay apart. Without a writable cgroup file system limits are not enforced and
//! the agent says so once.

use std::path::{Path, PathBuf};

use crds::Resources;

/// CFS period used for CPU quotas.
pub const PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone)]
enum Layout {
    V2 { root: PathBuf },
    V1 { cpu: PathBuf, memory: PathBuf },
    Unavailable,
}

/// The cgroups of one node's Instances (see the module docs).
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

impl Cgroups {
    /// Find the cgroup layout under `mount` (normally `/sys/fs/cgroup`) and prepare the
    /// node's parent group.
    pub fn detect(mount: &Path, node: &str) -> Cgroups {
        let controllers =
            std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
        let layout = if controllers.contains("cpu") && controllers.contains("memory") {
            let root = mount.join("oakestra").join(node);
            let prepared = std::fs::create_dir_all(&root).is_ok()
                && write(&mount.join("cgroup.subtree_control"), "+cpu +memory").is_ok()
                && write(
                    &mount.join("oakestra/cgroup.subtree_control"),
                    "+cpu +memory",
                )
                .is_ok()
                && write(&root.join("cgroup.subtree_control"), "+cpu +memory").is_ok();
            if prepared {
                Layout::V2 { root }
            } else {
                Layout::Unavailable
            }
        } else {
            let cpu = mount.join("cpu/oakestra").join(node);
            let memory = mount.join("memory/oakestra").join(node);
            if std::fs::create_dir_all(&cpu).is_ok() && std::fs::create_dir_all(&memory).is_ok() {
                Layout::V1 { cpu, memory }
            } else {
                Layout::Unavailable
            }
        };
        if matches!(layout, Layout::Unavailable) {
            tracing::warn!(mount = %mount.display(), "no writable cgroup hierarchy with cpu and memory: limits are not enforced");
        } else {
            tracing::info!(?layout, "cgroups for instance limits");
        }
        Cgroups { layout }
    }

    /// Whether limits are enforced (a writable cgroup file system was found).
    pub fn enforced(&self) -> bool {
        !matches!(self.layout, Layout::Unavailable)
    }

    fn dirs(&self, token: &str) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V2 { root } => vec![root.join(token)],
            Layout::V1 { cpu, memory } => vec![cpu.join(token), memory.join(token)],
            Layout::Unavailable => vec![],
        }
    }

    /// Create the Instance's group with its limits; returns the `cgroup.procs` files the
    /// process must join.
    pub fn create(&self, token: &str, r: &Resources) -> std::io::Result<Vec<PathBuf>> {
        let quota = (r.cpu_millicores > 0).then(|| r.cpu_millicores * PERIOD_US / 1000);
        let memory = (r.memory_mib > 0).then(|| r.memory_mib * 1024 * 1024);
        match &self.layout {
            Layout::Unavailable => Ok(vec![]),
            Layout::V2 { root } => {
                let dir = root.join(token);
                std::fs::create_dir_all(&dir)?;
                if let Some(q) = quota {
                    write(&dir.join("cpu.max"), &format!("{q} {PERIOD_US}"))?;
                }
                if let Some(m) = memory {
                    write(&dir.join("memory.max"), &m.to_string())?;
                    let _ = write(&dir.join("memory.swap.max"), "0");
                }
                Ok(vec![dir.join("cgroup.procs")])
            }
            Layout::V1 { cpu, memory: mem } => {
                let (c, m) = (cpu.join(token), mem.join(token));
                std::fs::create_dir_all(&c)?;
                std::fs::create_dir_all(&m)?;
                if let Some(q) = quota {
                    write(&c.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                    write(&c.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
                if let Some(limit) = memory {
                    write(&m.join("memory.limit_in_bytes"), &limit.to_string())?;
                    let _ = write(&m.join("memory.memsw.limit_in_bytes"), &limit.to_string());
                }
                Ok(vec![c.join("cgroup.procs"), m.join("cgroup.procs")])
            }
        }
    }

    /// Whether the kernel's OOM killer killed something in the Instance's group.
    pub fn oom_killed(&self, token: &str) -> bool {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let count = |text: String| {
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        match &self.layout {
            Layout::V2 { root } => count(read(root.join(token).join("memory.events"))) > 0,
            Layout::V1 { memory, .. } => {
                count(read(memory.join(token).join("memory.oom_control"))) > 0
            }
            Layout::Unavailable => false,
        }
    }

    /// Remove the Instance's group (it must be empty).
    pub fn remove(&self, token: &str) {
        for dir in self.dirs(token) {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}
