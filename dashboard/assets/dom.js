// Building the page: elements from plain data (text is always text, never parsed as
// HTML), status badges that carry a word, announcements for screen readers.

const SVG = 'http://www.w3.org/2000/svg';

function build(element, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'on') {
      for (const [event, f] of Object.entries(v)) element.addEventListener(event, f);
    } else if (k === 'class') {
      element.setAttribute('class', v);
    } else if (
      k in element &&
      typeof element[k] !== 'function' &&
      !(typeof element[k] === 'boolean' && typeof v === 'string') &&
      !(element instanceof SVGElement)
    ) {
      element[k] = v;
    } else {
      element.setAttribute(k, v === true ? '' : v);
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element: `h('a', {href: '#/x'}, 'text', child…)`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG, tag), attrs, children);
}

/** A status word in a badge; the tone only adds a colour and a shape. */
export function badge(status) {
  const b = h('span', { class: `badge tone-${status.tone}` }, status.word);
  if (status.detail) b.title = status.detail;
  return b;
}

/** A status word with its detail written out beside it. */
export function statusCell(status) {
  return h(
    'span',
    { class: 'status' },
    badge(status),
    status.detail ? h('span', { class: 'detail' }, status.detail) : null,
  );
}

/** Say `text` to screen readers (and show nothing). */
export function announce(text) {
  const region = document.getElementById('announce');
  region.textContent = '';
  setTimeout(() => {
    region.textContent = text;
  }, 30);
}

/** The view's title, focused so keyboard and screen-reader users start there. */
export function title(text, ...extra) {
  return h('h1', { tabindex: '-1' }, text, ...extra);
}

/** A line telling whether a collection is live (or why not). */
export function liveState(collection) {
  const p = h('p', { class: 'live', role: 'status' });
  const show = () => {
    const c = collection;
    const text = {
      loading: `Loading… ${c.size ? `${c.size} so far` : ''}`,
      live: 'Live',
      retrying: `Reconnecting (${c.problem})`,
    }[c.state];
    p.textContent = text || c.state;
    p.className = `live state-${c.state}`;
  };
  show();
  return { element: p, update: show };
}

/** A definition list from `[term, value]` pairs (values may be nodes). */
export function facts(pairs) {
  return h(
    'dl',
    { class: 'facts' },
    pairs.filter(Boolean).map(([term, value]) => [h('dt', {}, term), h('dd', {}, value ?? '–')]),
  );
}

/** An error for the user: the API's message, with its reason. */
export function errorText(e) {
  const reason = e && e.reason ? ` (${e.reason})` : '';
  return `${(e && e.message) || e}${reason}`;
}
