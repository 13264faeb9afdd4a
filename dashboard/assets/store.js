// Live collections of objects, shared by every view: one per API path and selectors.
// Each lists (in pages, so the first screen can show before the rest arrives), then
// watches from the list's resourceVersion with bookmarks; a stream that ends resumes
// from the last version seen, a 410 lists again, other failures retry with a growing
// pause. Nothing polls: every change comes from the watch.
//
// Views `acquire` a collection and `release` it when they go; a collection nobody
// holds stops its watch (a browser has six connections to a server, and each watch
// holds one) but keeps its objects and version, so coming back resumes from there.

import { call, readLines, ApiError } from './api.js';
import { perf } from './format.js';

const PAGE = 500;
const collections = new Map();

/** The key of an object in a collection: `namespace/name`, or `name`. */
export function keyOf(object) {
  const m = object.metadata || {};
  return m.namespace ? `${m.namespace}/${m.name}` : m.name;
}

class Collection {
  constructor(path, selectors) {
    this.path = path;
    this.selectors = selectors;
    this.items = new Map();
    this.version = null;
    this.holders = 0;
    this.listeners = new Set();
    this.state = 'loading';
    this.problem = '';
    this.listed = false;
    this.sortedKeys = null;
    this.pending = null;
    this.abort = null;
    this.pause = 500;
  }

  /** The object of `key`. */
  get(key) {
    return this.items.get(key);
  }

  get size() {
    return this.items.size;
  }

  /** Every key, sorted (the order the API lists in), kept until one comes or goes. */
  keys() {
    if (!this.sortedKeys) this.sortedKeys = [...this.items.keys()].sort();
    return this.sortedKeys;
  }

  /** Call `f(batch)` after changes are applied; `batch.keys` holds the changed keys. */
  subscribe(f) {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  query(extra) {
    const q = new URLSearchParams(extra);
    for (const [k, v] of Object.entries(this.selectors)) if (v) q.set(k, v);
    return `${this.path}?${q}`;
  }

  /** Queue a notification; listeners run once per animation frame with all changes. */
  changed(key, arrived) {
    if (!this.pending) {
      this.pending = { keys: new Set(), arrived, membership: false };
      requestAnimationFrame(() => this.flush());
    }
    if (key !== null) this.pending.keys.add(key);
    return this.pending;
  }

  flush() {
    const batch = this.pending;
    this.pending = null;
    if (!batch) return;
    for (const f of this.listeners) f(batch);
    if (batch.watched) perf.applied(performance.now() - batch.arrived);
  }

  setState(state, problem = '') {
    if (this.state === state && this.problem === problem) return;
    this.state = state;
    this.problem = problem;
    this.changed(null, performance.now()).membership = true;
  }

  start() {
    if (this.abort) return;
    const abort = new AbortController();
    this.abort = abort;
    this.run(abort.signal).catch(() => {});
  }

  stop() {
    if (this.abort) this.abort.abort();
    this.abort = null;
  }

  async run(signal) {
    while (!signal.aborted) {
      try {
        if (this.version === null) await this.list(signal);
        this.setState('live');
        await this.watch(signal);
        this.pause = 500;
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof ApiError && e.code === 410) {
          this.version = null;
          continue;
        }
        if (e instanceof ApiError && e.code === 401) return;
        this.setState('retrying', e.message || String(e));
        await new Promise((r) => setTimeout(r, this.pause));
        this.pause = Math.min(this.pause * 2, 30000);
      }
    }
  }

  /** List every object (in pages); the first list shows each page as it comes. */
  async list(signal) {
    const first = !this.listed;
    const items = first ? this.items : new Map();
    if (first) items.clear();
    let next = '';
    let version = null;
    do {
      const extra = { limit: PAGE };
      if (next) extra.continue = next;
      const page = await (await call(this.query(extra), { signal })).json();
      for (const object of page.items || []) items.set(keyOf(object), object);
      version = page.metadata.resourceVersion;
      next = page.metadata.continue || '';
      if (first) {
        this.sortedKeys = null;
        this.changed(null, performance.now()).membership = true;
      }
    } while (next);
    if (!first) {
      // A relist: the new objects replace the old ones at once.
      this.items = items;
      this.sortedKeys = null;
      this.changed(null, performance.now()).membership = true;
    }
    this.listed = true;
    this.version = version;
  }

  async watch(signal) {
    const url = this.query({
      watch: '1',
      resourceVersion: this.version,
      allowWatchBookmarks: 'true',
    });
    // Its own abort, so that a stream given up (a 410, an error event) is closed too.
    const own = new AbortController();
    const stop = () => own.abort();
    signal.addEventListener('abort', stop);
    try {
      const response = await call(url, { signal: own.signal });
      await readLines(response, (event) => this.apply(event));
    } finally {
      own.abort();
      signal.removeEventListener('abort', stop);
    }
    // The server ended the stream (a restart, a drain): resume after a breath.
    await new Promise((r) => setTimeout(r, 100));
  }

  apply(event) {
    const object = event.object || {};
    if (event.type === 'ERROR') {
      throw new ApiError(object.code || 500, object, 'watch error');
    }
    const rv = object.metadata && object.metadata.resourceVersion;
    if (rv) this.version = rv;
    if (event.type === 'BOOKMARK') return;
    const key = keyOf(object);
    const had = this.items.has(key);
    if (event.type === 'DELETED') this.items.delete(key);
    else this.items.set(key, object);
    const batch = this.changed(key, performance.now());
    batch.watched = true;
    if (had !== this.items.has(key)) {
      this.sortedKeys = null;
      batch.membership = true;
    }
  }
}

/**
 * The live collection of `path` (e.g. `/apis/oakestra.io/v1/services`) with
 * `selectors` (`{fieldSelector, labelSelector}`), held until `release()`.
 */
export function acquire(path, selectors = {}) {
  const id = `${path}?${new URLSearchParams(selectors)}`;
  let c = collections.get(id);
  if (!c) {
    c = new Collection(path, selectors);
    collections.set(id, c);
  }
  c.holders += 1;
  c.start();
  let held = true;
  return {
    collection: c,
    release() {
      if (!held) return;
      held = false;
      c.holders -= 1;
      if (c.holders === 0) c.stop();
    },
  };
}

/** Stop every watch and forget every object (at logout). */
export function forgetAll() {
  for (const c of collections.values()) c.stop();
  collections.clear();
}
