//! The reconcile runtime: [`watcher`] → [`reflector`] → [`informer`] (one per kind,
//! shared) → [`controller`], plus an [`events`] recorder. Every controller and the
//! worker agent are built on it.
//!
//! Reconcile functions are level-triggered: they read the cached state, move the world
//! one step toward the desired state, and never rely on having seen every event.

pub mod controller;
pub mod events;
pub mod informer;
pub mod reflector;
pub mod watcher;

pub use controller::{Action, Controller, ReconcileError};
pub use events::Recorder;
pub use informer::{cache, informer, Informer};
pub use reflector::{ObjectRef, Store};
pub use watcher::{watcher, Event};
