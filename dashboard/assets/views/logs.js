// An Instance's log, through the root (root → its cluster → its node's agent). While
// "Follow" is on, the request asks for `follow=true` and the answer goes on as the
// workload writes (the agent streams what is appended); the view stays at the bottom
// unless the reader scrolled up. Without it, the last lines are read once.

import { call } from '../api.js';
import { h, title, errorText } from '../dom.js';

/** How long before a followed log that ended (its node restarted, say) is asked again. */
const AGAIN_MS = 2000;
/** How much of a followed log the page keeps (the end of it), in characters. */
const KEEP_CHARS = 1 << 20;

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

  /** Show `text` (all of the log read so far), keeping the view at the bottom. */
  function draw(text) {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    pre.textContent = text || '(the log is empty)';
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  async function read() {
    clearTimeout(timer);
    if (inFlight) inFlight.abort();
    if (stopped) return;
    const abort = new AbortController();
    inFlight = abort;
    const following = follow.checked;
    const query = `?tailLines=${tail.value}${following ? '&follow=true' : ''}`;
    try {
      const response = await call(`${path}${query}`, { signal: abort.signal });
      if (!following) {
        draw(await response.text());
        state.textContent = `Read at ${new Date().toLocaleTimeString()}`;
        state.className = 'live';
        return;
      }
      state.textContent = 'Following';
      state.className = 'live state-live';
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let text = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
        if (text.length > KEEP_CHARS * 2) text = text.slice(text.indexOf('\n', text.length - KEEP_CHARS) + 1);
        draw(text);
      }
      state.textContent = 'The log ended; asking again…';
      state.className = 'live state-retrying';
    } catch (e) {
      if (abort.signal.aborted) return;
      state.textContent = `Cannot read the log: ${errorText(e)}`;
      state.className = 'live state-retrying';
    }
    if (follow.checked && !stopped && inFlight === abort) timer = setTimeout(read, AGAIN_MS);
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
