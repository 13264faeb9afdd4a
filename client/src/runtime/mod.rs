//! The reconcile runtime: watcher → reflector → informer (one per kind, shared) →
//! controller, plus backoff and an Event recorder. Every controller and the worker
//! agent are built on it.
//!
//! - [`watcher`](mod@watcher): the list-then-watch state machine, one [`Change`] per
//!   item.
//! - [`backoff`]: exponential backoff with jitter, and the stream adapter that waits
//!   after a watcher's errors.
//! - [`reflector`]: the cache ([`Store`]) a watcher keeps, with its secondary indexes
//!   ([`IndexName`]).
//! - [`informer`](mod@informer): one watch and cache per kind and selectors, shared by the
//!   controllers of one client ([`Informers`]).
//! - [`controller`]: the work queue and runner, its timers and error policy
//!   ([`ReconcileError`]).
//! - [`events`]: recording `Event` objects about the objects a controller handles.
//! - [`written`]: what a controller wrote, until its cache shows it.
//!
//! Reconcile functions are level-triggered: they read the cached state, move the world
//! one step toward the desired state, and never rely on having seen every change.

pub mod backoff;
pub mod controller;
pub mod events;
pub mod informer;
pub mod reflector;
pub mod watcher;
pub mod written;

pub use backoff::Backoff;
pub use controller::{Action, Controller, OnError, ReconcileError};
pub use events::Recorder;
pub use informer::{cache, informer, Informer, Informers};
pub use reflector::{IndexName, ObjectRef, Store};
pub use watcher::{watcher, Change};
pub use written::Written;
