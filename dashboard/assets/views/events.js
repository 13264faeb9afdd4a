// Every Event, newest first: what the controllers and agents did and what went wrong
// (Warnings), by object.

import { acquire } from '../store.js';
import { KINDS } from '../api.js';
import { title, liveState } from '../dom.js';
import { Table, keepDrawn } from '../table.js';
import { eventColumns, newestFirst } from './service.js';

export function show(main) {
  const held = acquire(`${KINDS.events.group}/events`);
  const c = held.collection;
  const live = liveState(c);
  const columns = eventColumns();
  columns.splice(2, 0, { title: 'Namespace', wide: true, cell: (o) => o.metadata.namespace || '–' });
  const table = new Table({
    caption: 'Events, newest first',
    empty: 'No events.',
    name: (o) => `${o.involvedObject.name} ${o.reason} ${o.message}`,
    columns,
  });
  let order = null;
  const render = (batch) => {
    live.update();
    // Sorted again when events come or go, or change (a repeat moves one to the top).
    if (!order || !batch || batch.keys.size || batch.membership) order = newestFirst(c.keys(), (k) => c.get(k));
    table.update(order, (k) => c.get(k));
  };
  main.append(title('Events'), live.element, table.element);
  return keepDrawn(held, table, render);
}
