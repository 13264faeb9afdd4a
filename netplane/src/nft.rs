//! Applying rendered tables to the kernel: `nft` (one transaction per script),
//! `conntrack` (stale UDP flows) and the bridge-netfilter switch, each run in the
//! network namespace a [`Host`] names.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::exec::{CommandError, Host};

/// A kernel configuration command failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` refused or failed a script; the kernel kept what it had.
    #[error("nft: {0}")]
    Nft(#[source] CommandError),
    /// The `conntrack` tool is not on `PATH`.
    #[error("the `conntrack` tool is not installed (Debian package `conntrack`)")]
    ConntrackMissing,
    /// `conntrack` failed for another reason than "nothing matched".
    #[error("deleting conntrack entries: {0}")]
    Conntrack(#[source] CommandError),
    /// The namespace has no `net.bridge.bridge-nf-call-iptables`: the `br_netfilter`
    /// module is not loaded.
    #[error(
        "bridge netfilter is unavailable ({0}); load it with `modprobe br_netfilter` \
         so bridged instance traffic passes nftables"
    )]
    BridgeNetfilterMissing(#[source] CommandError),
    /// Setting `net.bridge.bridge-nf-call-iptables` failed.
    #[error("enabling bridge netfilter: {0}")]
    Sysctl(#[source] CommandError),
}

/// Apply `script` with `nft -f -`: one transaction, so either all of it takes effect
/// or none of it does.
pub async fn apply(host: &Host, script: &str) -> Result<(), NftError> {
    nft_script(host, &["-f", "-"], script).await
}

/// Check `script` with `nft -c -f -` without changing anything.
pub async fn check(host: &Host, script: &str) -> Result<(), NftError> {
    nft_script(host, &["-c", "-f", "-"], script).await
}

async fn nft_script(host: &Host, args: &[&str], script: &str) -> Result<(), NftError> {
    host.run_with_input("nft", args, script.as_bytes())
        .await
        .map(drop)
        .map_err(NftError::Nft)
}

/// The names of the `ip` family tables, in the order `nft` lists them.
pub async fn tables(host: &Host) -> Result<Vec<String>, NftError> {
    let out = host
        .run("nft", &["list", "tables", "ip"])
        .await
        .map_err(NftError::Nft)?;
    Ok(parse_tables(&out))
}

fn parse_tables(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("table ip "))
        .map(|name| name.trim().to_string())
        .collect()
}

/// Delete the UDP conntrack entries of packets to `frontend_ip:frontend_port` that
/// were sent on to `backend` by DNAT, so they go to a current backend. Nothing to
/// delete is not an error.
pub async fn forget_udp_flows(
    host: &Host,
    frontend_ip: Ipv4Addr,
    frontend_port: u16,
    backend: SocketAddrV4,
) -> Result<(), NftError> {
    if !on_path("conntrack") {
        return Err(NftError::ConntrackMissing);
    }
    let (ip, port, reply) = (
        frontend_ip.to_string(),
        frontend_port.to_string(),
        backend.ip().to_string(),
    );
    let args = [
        "-D",
        "-p",
        "udp",
        "--orig-dst",
        &ip,
        "--orig-port-dst",
        &port,
        "--reply-src",
        &reply,
    ];
    match host.run("conntrack", &args).await {
        Ok(_) => Ok(()),
        // conntrack exits 1 when no entry matched.
        Err(e) if e.message.contains("0 flow entries") => Ok(()),
        Err(e) => Err(NftError::Conntrack(e)),
    }
}

/// Whether `program` is an executable file in a directory of `PATH` (the file system
/// is the same in every network namespace, so this holds for any [`Host`]).
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

const BRIDGE_NF_SYSCTL: &str = "net.bridge.bridge-nf-call-iptables";

/// Make bridged IPv4 traffic pass the `ip` family hooks in `host`'s namespace
/// (`net.bridge.bridge-nf-call-iptables = 1`): replies an instance sends straight to a
/// peer on the same bridge must meet conntrack to be un-DNATed.
pub async fn ensure_bridge_netfilter(host: &Host) -> Result<(), NftError> {
    let current = host
        .run("sysctl", &["-n", BRIDGE_NF_SYSCTL])
        .await
        .map_err(NftError::BridgeNetfilterMissing)?;
    if current.trim() == "1" {
        return Ok(());
    }
    host.run("sysctl", &["-w", &format!("{BRIDGE_NF_SYSCTL}=1")])
        .await
        .map(drop)
        .map_err(NftError::Sysctl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_tables_table() {
        let cases = [
            ("", vec![]),
            ("table ip oakestra\n", vec!["oakestra"]),
            ("table ip a\ntable ip b\n", vec!["a", "b"]),
            ("table ip6 x\ntable ip y\n", vec!["y"]),
        ];
        for (listing, want) in cases {
            assert_eq!(parse_tables(listing), want, "{listing:?}");
        }
    }

    #[test]
    fn on_path_finds_sh_not_nonsense() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-netplane"));
    }
}
