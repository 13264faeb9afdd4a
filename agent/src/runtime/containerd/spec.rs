//! The OCI runtime spec of an Instance's container: what runs (the image's entrypoint
//! and cmd unless the template overrides them), its environment, and its limits as cgroup
//! resources. The defaults (mounts, capabilities, masked paths) are those of a plain
//! `ctr run`.

use crds::Workload;
use serde_json::{json, Value};

use super::registry::ImageConfig;
use crate::cgroup::PERIOD_US;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// argv: the template's command (+ args) if it has one; else the image's entrypoint
/// followed by the template's args, or by the image's cmd when there are none.
pub fn argv(workload: &Workload, image: &ImageConfig) -> Vec<String> {
    if !workload.command.is_empty() {
        return workload
            .command
            .iter()
            .chain(&workload.args)
            .cloned()
            .collect();
    }
    let entry = image.config.entrypoint.clone().unwrap_or_default();
    let rest = if workload.args.is_empty() {
        image.config.cmd.clone().unwrap_or_default()
    } else {
        workload.args.clone()
    };
    entry.into_iter().chain(rest).collect()
}

/// Environment: PATH (unless the image sets one), the image's, then `extra`, then the
/// template's (later entries win).
pub fn env(workload: &Workload, image: &ImageConfig, extra: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match out.iter_mut().find(|(key, _)| key == k) {
        Some(entry) => entry.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    let (k, v) = DEFAULT_PATH.split_once('=').expect("has =");
    set(k, v);
    for e in image.config.env.iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            set(k, v);
        }
    }
    for (k, v) in extra {
        set(k, v);
    }
    for e in &workload.env {
        set(&e.name, &e.value);
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Where the container's network comes from.
pub enum Network {
    /// The node's own network namespace.
    Host,
    /// A prepared namespace (bind-mounted at this path).
    Path(String),
}

/// The full spec.
pub fn build(
    hostname: &str,
    args: Vec<String>,
    env: Vec<String>,
    cwd: &str,
    workload: &Workload,
    cgroups_path: &str,
    network: &Network,
) -> Value {
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    ];
    // A namespace of its own may come with its own resolv.conf (the node's DNS
    // responder, written where `ip netns` keeps such files); else the host's.
    let own_resolv = match network {
        Network::Path(p) => crate::network::resolv_conf(std::path::Path::new(p))
            .filter(|f| f.exists())
            .map(|f| f.display().to_string()),
        Network::Host => None,
    };
    let files = [
        (
            "/etc/resolv.conf",
            own_resolv.unwrap_or_else(|| "/etc/resolv.conf".into()),
        ),
        ("/etc/hosts", "/etc/hosts".into()),
    ];
    for (destination, source) in files {
        if std::path::Path::new(&source).exists() {
            mounts.push(json!({"destination": destination, "type": "bind", "source": source, "options": ["rbind", "ro"]}));
        }
    }
    match network {
        Network::Host => {}
        Network::Path(p) => namespaces.push(json!({"type": "network", "path": p})),
    }
    let r = &workload.resources;
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if r.cpu_millicores > 0 {
        resources["cpu"] =
            json!({"quota": r.cpu_millicores * PERIOD_US / 1000, "period": PERIOD_US});
    }
    if r.memory_mib > 0 {
        let bytes = r.memory_mib * 1024 * 1024;
        resources["memory"] = json!({"limit": bytes, "swap": bytes});
    }
    json!({
        "ociVersion": "1.0.2-dev",
        "hostname": hostname,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": CAPABILITIES, "effective": CAPABILITIES, "permitted": CAPABILITIES},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{EnvVar, Resources};

    fn image(entry: &[&str], cmd: &[&str]) -> ImageConfig {
        let mut c = ImageConfig::default();
        c.config.entrypoint = Some(entry.iter().map(|s| s.to_string()).collect());
        c.config.cmd = Some(cmd.iter().map(|s| s.to_string()).collect());
        c.config.env = Some(vec!["PATH=/bin".into(), "A=image".into()]);
        c
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_follows_docker_rules() {
        let img = image(&["/entry"], &["default"]);
        let mut w = Workload::default();
        assert_eq!(argv(&w, &img), s(&["/entry", "default"]));
        w.args = s(&["x"]);
        assert_eq!(argv(&w, &img), s(&["/entry", "x"]));
        w.command = s(&["/bin/sh", "-c"]);
        assert_eq!(argv(&w, &img), s(&["/bin/sh", "-c", "x"]));
    }

    #[test]
    fn env_layers_image_then_agent_then_template() {
        let img = image(&[], &[]);
        let w = Workload {
            env: vec![EnvVar {
                name: "A".into(),
                value: "template".into(),
                value_from: None,
            }],
            ..Default::default()
        };
        let e = env(&w, &img, &[("B".into(), "agent".into())]);
        assert_eq!(e, s(&["PATH=/bin", "A=template", "B=agent"]));
    }

    #[test]
    fn limits_become_cgroup_resources() {
        let w = Workload {
            resources: Resources {
                cpu_millicores: 500,
                memory_mib: 64,
                ..Default::default()
            },
            ..Default::default()
        };
        let spec = build(
            "h",
            s(&["/bin/true"]),
            vec![],
            "/",
            &w,
            "/oakestra/n/x",
            &Network::Host,
        );
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(
            spec["linux"]["resources"]["memory"]["limit"],
            64 * 1024 * 1024
        );
        assert_eq!(spec["linux"]["cgroupsPath"], "/oakestra/n/x");
    }
}
