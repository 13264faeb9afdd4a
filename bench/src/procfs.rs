//! What `/proc` says about a process: resident memory, CPU time, finding a PID.

use anyhow::Context;

/// Clock ticks per second of `utime`/`stime` in `/proc/PID/stat` (`USER_HZ`, 100 on
/// Linux for every architecture this runs on; `sysconf` is not reachable without libc).
const USER_HZ: f64 = 100.0;

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// The most resident memory process `pid` has had, in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM")
}

/// The field `field` (a size in kB) of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU time (user + system, all threads) process `pid` has used, in seconds; `None`
/// when it cannot be read. `pid` may be `"self"`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time of the threads of this process whose name (`comm`, at most 15 bytes)
/// satisfies `pick`, in seconds. Threads that ended are not counted.
pub fn own_threads_cpu_seconds(pick: impl Fn(&str) -> bool) -> Option<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let comm = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(comm, _)| comm)
            .unwrap_or_default();
        if pick(comm) {
            total += stat_cpu_seconds(&stat).unwrap_or(0.0);
        }
    }
    Some(total)
}

/// `utime + stime` of a `/proc/…/stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name is in parentheses and may hold spaces: fields start after ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), utime 14, stime 15.
    let ticks = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    Some((ticks(14)? + ticks(15)?) / USER_HZ)
}

/// CPU time the whole machine was busy (all CPUs: user, nice, system, irq, softirq,
/// steal; not idle or iowait), in seconds, from the first line of `/proc/stat`.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice: inside user]
    let busy: f64 = ticks.iter().take(8).sum::<f64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy / USER_HZ)
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time of this process, of one other process, and of the whole machine.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: std::time::Instant,
    own: Option<f64>,
    other: Option<f64>,
    machine: Option<f64>,
}

/// What was spent between two [`CpuSample`]s, in CPU-seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSpent {
    pub own: Option<f64>,
    pub other_process: Option<f64>,
    /// Busy CPU time of everything else on the machine, in cores (CPU-s per s).
    pub rest_cores: Option<f64>,
}

impl CpuSample {
    /// Sample this process, `other` (e.g. etcd or the server process) and the machine.
    pub fn take(other: Option<u32>) -> CpuSample {
        CpuSample {
            at: std::time::Instant::now(),
            own: cpu_seconds("self"),
            other: other.and_then(|p| cpu_seconds(&p.to_string())),
            machine: machine_busy_seconds(),
        }
    }

    pub fn since(&self, before: &CpuSample) -> CpuSpent {
        let delta = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        let own = delta(before.own, self.own);
        let other_process = delta(before.other, self.other);
        let rest = delta(before.machine, self.machine)
            .zip(own)
            .map(|(m, o)| m - o - other_process.unwrap_or(0.0));
        let secs = (self.at - before.at).as_secs_f64().max(1e-9);
        CpuSpent {
            own,
            other_process,
            rest_cores: rest.map(|r| (r / secs).max(0.0)),
        }
    }
}

/// The PID of a process whose command line holds the argument `arg` exactly.
pub fn find_pid_with_arg(arg: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|b| *b == 0)
                .any(|a| a == arg.as_bytes())
                .then_some(pid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(cpu_seconds("self").is_some());
        assert!(machine_busy_seconds().is_some());
        assert!(own_threads_cpu_seconds(|_| true).is_some());
        assert!(loadavg().is_some());
        let before = CpuSample::take(Some(std::process::id()));
        let spent = CpuSample::take(Some(std::process::id())).since(&before);
        assert!(spent.own.is_some() && spent.rest_cores.is_some());
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        let me = std::env::args().next().unwrap();
        assert!(find_pid_with_arg(&me).is_some());
    }
}
