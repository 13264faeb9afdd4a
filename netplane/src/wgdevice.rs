//! The node's userspace WireGuard device as a process of its own (`oakestra
//! wireguard-device`), so that the tunnels outlive the agent as the kernel's device
//! would: [boringtun]'s device over a tun interface, and WireGuard's cross-platform
//! configuration protocol served on a Unix socket beside the node's key (mode 0600).
//!
//! The agent ([`crate::wireguard::Tunnel`]) starts it, holds the node's lock file while
//! it runs, and configures it through the socket, one request per connection as `wg`
//! does. [`serve`] relays each request to boringtun and stops the device when
//! - no agent has held the lock for [`DeviceSpec::linger`] (the agent stopped for good;
//!   a restarting one takes it again well within that), or
//! - its socket is gone or replaced (the node's data was removed, or another device
//!   took its place).
//!
//! [boringtun]: https://github.com/cloudflare/boringtun

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::device::{DeviceConfig, DeviceHandle};

use crate::wireguard::{exchange, WireguardError};

/// The subcommand of the `oakestra` binary that runs [`serve`].
pub const COMMAND: &str = "wireguard-device";

/// How often [`serve`] looks at the lock and the socket.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// What a device process runs: its interface, its socket, the agents' lock, and how
/// long it goes on once no agent holds the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The tun interface (at most 15 bytes).
    pub device: String,
    /// The configuration socket.
    pub socket: PathBuf,
    /// The lock file an agent holds while it uses the device.
    pub lock: PathBuf,
    /// How long the device goes on once no agent holds the lock.
    pub linger: Duration,
}

impl DeviceSpec {
    /// The arguments of `oakestra` that run this device (the `wireguard-device`
    /// subcommand parses them back).
    pub fn args(&self) -> Vec<OsString> {
        vec![
            COMMAND.into(),
            "--device".into(),
            self.device.clone().into(),
            "--socket".into(),
            self.socket.clone().into(),
            "--lock".into(),
            self.lock.clone().into(),
            "--linger-ms".into(),
            self.linger.as_millis().to_string().into(),
        ]
    }
}

/// Why a device stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// No agent held the lock for the linger time.
    NoAgent,
    /// The socket was removed or replaced.
    SocketGone,
}

/// Runs the device of `spec` in this process's network namespace until it should stop
/// (see the module docs); the tun interface goes with it. Fails if the interface cannot
/// be made or the socket bound.
pub fn serve(spec: &DeviceSpec) -> Result<Stopped, WireguardError> {
    let fail = |message: String| WireguardError::Device {
        device: spec.device.clone(),
        message,
    };
    let (ours, theirs) = UnixStream::pair().map_err(|e| fail(e.to_string()))?;
    let config = DeviceConfig {
        // Two packet threads: the node's instances share the tunnel.
        n_threads: 2,
        use_connected_socket: true,
        use_multi_queue: false,
        uapi_fd: std::os::fd::IntoRawFd::into_raw_fd(theirs),
    };
    let device = DeviceHandle::new(&spec.device, config).map_err(|e| fail(e.to_string()))?;
    ours.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail(e.to_string()))?;
    let boringtun = Arc::new(Mutex::new(ours));

    let _ = std::fs::remove_file(&spec.socket);
    let listener = UnixListener::bind(&spec.socket)
        .map_err(|e| fail(format!("binding {}: {e}", spec.socket.display())))?;
    std::fs::set_permissions(&spec.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("making {} private: {e}", spec.socket.display())))?;
    let inode = socket_inode(&spec.socket);
    tracing::info!(device = %spec.device, socket = %spec.socket.display(), linger = ?spec.linger, "WireGuard device serving");

    let broken = Arc::new(AtomicBool::new(false));
    {
        let (boringtun, broken, device) = (boringtun.clone(), broken.clone(), spec.device.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Err(e) = relay(&conn, &boringtun) {
                    tracing::warn!(%device, error = %e, "a configuration request failed");
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        broken.store(true, Ordering::SeqCst);
                    }
                }
            }
        });
    }

    let mut unheld_since: Option<Instant> = None;
    let stopped = loop {
        std::thread::sleep(WATCH_EVERY);
        if broken.load(Ordering::SeqCst) {
            drop(device);
            return Err(fail("boringtun closed its configuration socket".into()));
        }
        if inode.is_none() || socket_inode(&spec.socket) != inode {
            break Stopped::SocketGone;
        }
        if lock_is_held(&spec.lock) {
            unheld_since = None;
        } else if unheld_since.get_or_insert_with(Instant::now).elapsed() >= spec.linger {
            break Stopped::NoAgent;
        }
    };
    tracing::info!(device = %spec.device, reason = ?stopped, "WireGuard device stopping");
    drop(device);
    if socket_inode(&spec.socket) == inode {
        let _ = std::fs::remove_file(&spec.socket);
    }
    Ok(stopped)
}

/// Passes one request from `conn` to boringtun and its answer back.
fn relay(conn: &UnixStream, boringtun: &Mutex<UnixStream>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = String::new();
    let mut reader = BufReader::new(conn);
    // The command line, then its lines up to the blank one that ends it.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // a client that sent nothing (or a probe)
        }
        let blank = line.trim_end().is_empty();
        request.push_str(&line);
        if blank && request.len() > line.len() {
            break;
        }
    }
    let (answer, errno) = {
        let stream = boringtun.lock().unwrap_or_else(|e| e.into_inner());
        exchange(&stream, &request)?
    };
    let mut writer = conn;
    writer.write_all(format!("{answer}errno={errno}\n\n").as_bytes())
}

fn socket_inode(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// Whether an agent holds the lock at `path` (a missing lock file is held by none).
fn lock_is_held(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_held_while_a_file_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wireguard.lock");
        assert!(!lock_is_held(&path), "no file: nobody holds it");
        let agent = std::fs::File::create(&path).unwrap();
        assert!(!lock_is_held(&path));
        agent.lock().unwrap();
        assert!(lock_is_held(&path));
        drop(agent);
        assert!(!lock_is_held(&path), "released when the holder is gone");
    }

    #[test]
    fn the_spec_goes_on_the_command_line() {
        let spec = DeviceSpec {
            device: "oakestra.wg".into(),
            socket: "/var/lib/oakestra/n1/wireguard.sock".into(),
            lock: "/var/lib/oakestra/n1/wireguard.lock".into(),
            linger: Duration::from_secs(60),
        };
        let args: Vec<String> = spec
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            "wireguard-device --device oakestra.wg --socket /var/lib/oakestra/n1/wireguard.sock --lock /var/lib/oakestra/n1/wireguard.lock --linger-ms 60000"
        );
    }
}
