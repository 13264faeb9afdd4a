// Words and numbers for objects: status words (never only a colour), ages, resources;
// and the page's performance figures (window.oakDashboard.perf).

const figures = { firstScreen: {}, appliedMs: [] };

export const perf = {
  /** A view showed its first screen of rows (ms since the page started loading). */
  firstScreen(view) {
    if (!(view in figures.firstScreen)) figures.firstScreen[view] = performance.now();
  },
  /** A batch of watch events was applied to the page, `ms` after the first arrived. */
  applied(ms) {
    figures.appliedMs.push(ms);
    if (figures.appliedMs.length > 2000) figures.appliedMs.shift();
  },
};

window.oakDashboard = { perf: figures };

/** The condition `type` of an object's status. */
export function condition(object, type) {
  const list = (object.status && object.status.conditions) || [];
  return list.find((c) => c.type === type);
}

/** `3s`, `5m`, `2h`, `4d` since `time` (RFC 3339), as kubectl shows ages. */
export function age(time, now = Date.now()) {
  if (!time) return '';
  const s = Math.max(0, Math.floor((now - Date.parse(time)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function cpu(millicores) {
  if (millicores === undefined || millicores === null) return '–';
  return millicores >= 1000 ? `${(millicores / 1000).toFixed(millicores % 1000 ? 1 : 0)} cores` : `${millicores}m`;
}

export function memory(mib) {
  if (mib === undefined || mib === null) return '–';
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${mib} MiB`;
}

/** A status as a word and a tone (`ok`, `warn`, `bad`, `idle`) with its detail. */
function status(word, tone, detail = '') {
  return { word, tone, detail };
}

export function clusterStatus(cluster) {
  const ready = condition(cluster, 'Ready');
  if (!ready) return status('Unknown', 'idle', 'no heartbeat yet');
  if (ready.status === 'True') return status('Ready', 'ok', ready.message || '');
  return status('Not ready', 'bad', [ready.reason, ready.message].filter(Boolean).join(': '));
}

export function nodeStatus(node) {
  const ready = condition(node, 'Ready');
  if (node.spec && node.spec.unschedulable) return status('Cordoned', 'warn', 'takes no new Instances');
  if (!ready) return status('Unknown', 'idle', '');
  if (ready.status === 'True') return status('Ready', 'ok', '');
  return status('Not ready', 'bad', [ready.reason, ready.message].filter(Boolean).join(': '));
}

/** A Service's state: Ready, Stalled (with the placement reason), Scaling…, Unknown. */
export function serviceStatus(service) {
  const c = (t) => condition(service, t);
  const stalled = c('Stalled');
  const placed = c('Placed');
  const ready = c('Ready');
  const reconciling = c('Reconciling');
  const why = (x) => (x ? [x.reason, x.message].filter(Boolean).join(': ') : '');
  if (placed && placed.status === 'False') return status('Not placed', 'bad', why(placed));
  if (stalled && stalled.status === 'True') return status('Stalled', 'bad', why(stalled));
  if (ready && ready.status === 'True') return status('Ready', 'ok', '');
  if (reconciling && reconciling.status === 'True') return status('Progressing', 'warn', why(reconciling));
  if (ready) return status('Not ready', 'warn', why(ready));
  if ((service.spec && service.spec.replicas) === 0) return status('Scaled to 0', 'idle', '');
  return status('Unknown', 'idle', 'no status yet');
}

const PHASE_TONES = {
  Running: 'ok',
  Succeeded: 'ok',
  Pending: 'warn',
  Scheduled: 'warn',
  Starting: 'warn',
  Terminating: 'idle',
  Failed: 'bad',
};

export function instanceStatus(instance) {
  const s = instance.status || {};
  const phase = s.phase || 'Pending';
  let detail = [s.reason, s.message].filter(Boolean).join(': ');
  const scheduled = condition(instance, 'Scheduled');
  if (!detail && scheduled && scheduled.status === 'False') {
    detail = [scheduled.reason, scheduled.message].filter(Boolean).join(': ');
  }
  if (instance.metadata.deletionTimestamp) return status('Terminating', 'idle', detail);
  return status(phase, PHASE_TONES[phase] || 'idle', detail);
}

export function eventStatus(event) {
  return event.type === 'Warning' ? status('Warning', 'warn', '') : status('Normal', 'idle', '');
}

/** `used of total` for two capacities' field. */
export function share(allocatable, capacity, field, unit) {
  const total = capacity ? capacity[field] : undefined;
  if (total === undefined) return '–';
  const free = allocatable ? allocatable[field] : undefined;
  return `${unit(free ?? 0)} free of ${unit(total)}`;
}

export function location(loc) {
  if (!loc) return 'not set';
  const ns = loc.latitude >= 0 ? 'N' : 'S';
  const ew = loc.longitude >= 0 ? 'E' : 'W';
  const place = loc.place ? ` (${loc.place})` : '';
  return `${Math.abs(loc.latitude).toFixed(2)}°${ns} ${Math.abs(loc.longitude).toFixed(2)}°${ew}${place}`;
}
