// A table of objects that stays fast with tens of thousands of rows: it renders one
// page of them (the rest are a click or a filter away), keeps each row's element while
// its object's version is the same, and on narrow screens shows each row as a card
// (every cell labelled with its column's name).

import { h } from './dom.js';

let tables = 0;

export class Table {
  /**
   * `columns`: `[{title, cell(object) → text or node, wide?}]` (`wide` columns are left
   * out on narrow screens); `caption`: what the table lists; `name(object)`: what the
   * filter box matches.
   */
  constructor({ caption, columns, pageSize = 50, empty = 'Nothing here yet.', name }) {
    this.id = `table-${++tables}`;
    this.columns = columns;
    this.pageSize = pageSize;
    this.empty = empty;
    this.name = name || ((o) => `${o.metadata.namespace || ''}/${o.metadata.name}`);
    this.page = 0;
    this.filter = '';
    this.keys = [];
    this.get = () => undefined;
    this.rows = new Map();
    this.tick = 0;
    this.shown = null;

    const filter = h('input', {
      type: 'search',
      id: `${this.id}-filter`,
      placeholder: 'name contains…',
      autocomplete: 'off',
      on: {
        input: (e) => {
          this.filter = e.target.value.trim().toLowerCase();
          this.page = 0;
          this.render();
        },
      },
    });
    this.count = h('span', { class: 'count', 'aria-live': 'polite' });
    this.tbody = h('tbody');
    this.prev = h('button', { type: 'button', on: { click: () => this.turn(-1) } }, 'Previous page');
    this.next = h('button', { type: 'button', on: { click: () => this.turn(1) } }, 'Next page');
    this.where = h('span', { class: 'where' });
    this.element = h(
      'section',
      { class: 'table', 'aria-labelledby': `${this.id}-caption` },
      h(
        'div',
        { class: 'toolbar' },
        h('label', { for: `${this.id}-filter` }, 'Filter'),
        filter,
        this.count,
      ),
      h(
        'table',
        {},
        h('caption', { id: `${this.id}-caption` }, caption),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            columns.map((c) => h('th', { scope: 'col', class: c.wide ? 'wide' : '' }, c.title)),
          ),
        ),
        this.tbody,
      ),
      h('div', { class: 'pager' }, this.prev, this.where, this.next),
    );
    // Ages move on: the visible rows are drawn again every 10 s (no request is made).
    this.clock = setInterval(() => {
      this.tick += 1;
      this.render();
    }, 10000);
  }

  /** Show the objects of `keys` (sorted as they should be shown), read through `get`. */
  update(keys, get) {
    this.keys = keys;
    this.get = get;
    this.render();
  }

  turn(by) {
    this.page += by;
    this.render();
    this.tbody.closest('table').scrollIntoView({ block: 'nearest' });
  }

  /** The keys that pass the filter. */
  visible() {
    if (!this.filter) return this.keys;
    if (this.shown && this.shown.keys === this.keys && this.shown.filter === this.filter) {
      return this.shown.result;
    }
    const result = this.keys.filter((k) => {
      const o = this.get(k);
      return o && this.name(o).toLowerCase().includes(this.filter);
    });
    this.shown = { keys: this.keys, filter: this.filter, result };
    return result;
  }

  render() {
    const keys = this.visible();
    const pages = Math.max(1, Math.ceil(keys.length / this.pageSize));
    this.page = Math.min(Math.max(this.page, 0), pages - 1);
    const from = this.page * this.pageSize;
    const slice = keys.slice(from, from + this.pageSize);
    const rows = [];
    const keep = new Map();
    for (const key of slice) {
      const object = this.get(key);
      if (!object) continue;
      const version = `${object.metadata.resourceVersion}|${this.tick}`;
      let row = this.rows.get(key);
      if (!row || row.version !== version) {
        row = { version, tr: this.row(key, object) };
      }
      keep.set(key, row);
      rows.push(row.tr);
    }
    this.rows = keep;
    if (rows.length === 0) {
      rows.push(h('tr', { class: 'empty' }, h('td', { colspan: String(this.columns.length) }, this.empty)));
    }
    // Only rows that changed or moved are touched; a control that had the focus in a
    // row drawn again gets it back in the new row.
    const current = [...this.tbody.children];
    if (current.length !== rows.length || current.some((tr, i) => tr !== rows[i])) {
      const focused = document.activeElement;
      const row = focused && focused !== document.body && this.tbody.contains(focused) ? focused.closest('tr') : null;
      const controls = (tr) => [...tr.querySelectorAll('a, button, input, select')];
      const at = row ? controls(row).indexOf(focused) : -1;
      this.tbody.replaceChildren(...rows);
      if (row && !row.isConnected) {
        const again = rows.find((tr) => tr.dataset.key === row.dataset.key);
        const target = again && controls(again)[at];
        if (target) target.focus({ preventScroll: true });
      }
    }
    const total = this.keys.length;
    const shown = keys.length;
    this.count.textContent =
      shown === total ? `${total} in all` : `${shown} of ${total} match`;
    this.where.textContent = shown
      ? `Rows ${from + 1}–${from + slice.length} of ${shown} (page ${this.page + 1} of ${pages})`
      : '';
    this.prev.disabled = this.page === 0;
    this.next.disabled = this.page >= pages - 1;
    this.element.classList.toggle('one-page', pages === 1);
  }

  row(key, object) {
    return h(
      'tr',
      { 'data-key': key },
      this.columns.map((c) =>
        h('td', { 'data-label': c.title, class: c.wide ? 'wide' : '' }, c.cell(object)),
      ),
    );
  }

  stop() {
    clearInterval(this.clock);
  }
}

/**
 * Draw `table`'s view with `render` now and on every change of the collection `held`
 * holds; returns what the router calls when the view goes: the subscription, the
 * table and the held collection are let go.
 */
export function keepDrawn(held, table, render) {
  const unsubscribe = held.collection.subscribe(render);
  render();
  return {
    stop() {
      unsubscribe();
      table.stop();
      held.release();
    },
  };
}
