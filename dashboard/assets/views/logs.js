// An Instance's log, through the root (root → its cluster → its node's agent), and
// followed: while "Follow" is on, the end of the log is read again every 2 s (the
// agent serves the log file as it is, not as a stream) and the view stays at the
// bottom unless the reader scrolled up.

import { call } from '../api.js';
import { h, title, errorText } from '../dom.js';

const EVERY_MS = 2000;

export function show(main, namespace, name) {
  const path = `/apis/oakestra.io/v1/namespaces/${encodeURIComponent(namespace)}/instances/${encodeURIComponent(name)}/log`;
  const pre = h('pre', { class: 'log', id: 'log-text', tabindex: '0', role: 'log', 'aria-label': `Log of ${name}` });
  const state = h('p', { class: 'live', role: 'status' }, 'Reading…');
  const follow = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
  const tail = h(
    'select',
    { id: 'log-tail' },
    ['100', '500', '2000'].map((n) => h('option', { value: n, selected: n === '500' }, `${n} lines`)),
  );
  let timer = null;
  let stopped = false;
  let inFlight = null;

  async function read() {
    clearTimeout(timer);
    if (stopped) return;
    const abort = new AbortController();
    inFlight = abort;
    try {
      const response = await call(`${path}?tailLines=${tail.value}`, { signal: abort.signal });
      const text = await response.text();
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      if (pre.textContent !== text) {
        pre.textContent = text || '(the log is empty)';
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
      state.textContent = `Read at ${new Date().toLocaleTimeString()}${follow.checked ? ', following' : ''}`;
      state.className = 'live state-live';
    } catch (e) {
      if (abort.signal.aborted) return;
      state.textContent = `Cannot read the log: ${errorText(e)}`;
      state.className = 'live state-retrying';
    }
    if (follow.checked && !stopped) timer = setTimeout(read, EVERY_MS);
  }
  follow.addEventListener('change', read);
  tail.addEventListener('change', read);

  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/instances' }, 'Instances'), ' › ', `${namespace}/${name}`, ' › log'),
    title(`Log of ${name}`),
    h(
      'div',
      { class: 'toolbar' },
      h('label', { for: 'log-tail' }, 'Show the last'),
      tail,
      h('span', { class: 'check' }, follow, h('label', { for: 'log-follow' }, 'Follow')),
      h('button', { type: 'button', on: { click: read } }, 'Read again'),
    ),
    state,
    pre,
  );
  read();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (inFlight) inFlight.abort();
    },
  };
}
