//! The Oakestra API server.
//!
//! Owns the HTTP API (Kubernetes conventions, so `kubectl` works unchanged), the
//! validation of every write, the shared watch fan-out, metrics, and the storage
//! backends behind one [`storage::Store`] contract.

pub mod storage;
