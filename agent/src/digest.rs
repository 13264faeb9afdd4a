//! Content digests: `sha256:<hex>` as OCI names blobs (image manifests, layer chain
//! ids) and the agent derives short stable names from (the node's bridge).

use sha2::Digest;

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
