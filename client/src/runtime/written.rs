//! What a controller wrote, until its cache shows it: a reconcile that runs again
//! before its own write has come back through the watch goes by the written object,
//! not the cache's older one (a write of everything a manager owns, built from the
//! older one, would undo the last write).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crds::Resource;

use super::ObjectRef;

/// The last object a controller wrote, per key (see the module docs).
pub struct Written<K> {
    objects: Mutex<HashMap<ObjectRef, Arc<K>>>,
}

impl<K> Default for Written<K> {
    fn default() -> Self {
        Written {
            objects: Mutex::default(),
        }
    }
}

/// The resourceVersion of `object` as a number (0 when it has none).
fn version<K: Resource>(object: &K) -> i64 {
    object
        .metadata()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl<K: Resource> Written<K> {
    /// The newer of `cached` and what was written to `key`: the written object while
    /// it is the same object (uid) at a newer version; else `cached`, and the written
    /// one is forgotten (the cache has caught up, or the object was replaced).
    pub fn newest(&self, key: &ObjectRef, cached: Arc<K>) -> Arc<K> {
        let mut objects = self.objects.lock().expect("written lock");
        match objects.get(key) {
            Some(w)
                if w.metadata().uid == cached.metadata().uid
                    && version(w.as_ref()) > version(cached.as_ref()) =>
            {
                w.clone()
            }
            Some(_) => {
                objects.remove(key);
                cached
            }
            None => cached,
        }
    }

    /// Remember `object`, as the server answered a write to `key`.
    pub fn wrote(&self, key: ObjectRef, object: K) {
        self.objects
            .lock()
            .expect("written lock")
            .insert(key, Arc::new(object));
    }

    /// Forget what was written to `key` (it is gone, or no longer this controller's).
    pub fn forget(&self, key: &ObjectRef) {
        self.objects.lock().expect("written lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::Instance;

    fn at(uid: &str, version: &str) -> Arc<Instance> {
        let mut i = Instance::new("web-0", Default::default());
        i.metadata.uid = Some(uid.into());
        i.metadata.resource_version = Some(version.into());
        Arc::new(i)
    }

    fn rv(i: &Instance) -> &str {
        i.metadata.resource_version.as_deref().unwrap_or_default()
    }

    #[test]
    fn the_written_object_wins_until_the_cache_catches_up() {
        let key = ObjectRef::new(None, "web-0");
        let written = Written::default();
        assert_eq!(
            rv(&written.newest(&key, at("u1", "5"))),
            "5",
            "nothing written"
        );
        written.wrote(key.clone(), (*at("u1", "7")).clone());
        assert_eq!(
            rv(&written.newest(&key, at("u1", "5"))),
            "7",
            "cache behind"
        );
        assert_eq!(rv(&written.newest(&key, at("u1", "7"))), "7", "caught up");
        // Caught up: forgotten, so the cache is what counts from now on.
        assert_eq!(rv(&written.newest(&key, at("u1", "6"))), "6");
        written.wrote(key.clone(), (*at("u1", "9")).clone());
        assert_eq!(
            rv(&written.newest(&key, at("u2", "3"))),
            "3",
            "another object of the same name"
        );
        written.wrote(key.clone(), (*at("u1", "9")).clone());
        written.forget(&key);
        assert_eq!(rv(&written.newest(&key, at("u1", "5"))), "5", "forgotten");
    }
}
