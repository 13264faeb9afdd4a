//! What the agent reads about its machine from `/proc`: capacity (CPUs, memory) and
//! usage (memory in use, load).

use crds::Capacity;

/// CPUs and memory of this machine.
pub fn detect_capacity() -> Capacity {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Capacity {
        cpu_millicores: cpus * 1000,
        memory_mib: meminfo_kib(&meminfo, "MemTotal") / 1024,
        gpus: 0,
        nodes: 1,
    }
}

fn meminfo_kib(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What the machine uses now: memory in use, and the 1-minute load as millicores.
pub fn usage() -> Capacity {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let used = meminfo_kib(&meminfo, "MemTotal")
        .saturating_sub(meminfo_kib(&meminfo, "MemAvailable"))
        / 1024;
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Capacity {
        cpu_millicores: (load * 1000.0) as u64,
        memory_mib: used,
        gpus: 0,
        nodes: 1,
    }
}
