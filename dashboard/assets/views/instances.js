// Every Instance: phase, where it runs, its IP, restarts, why it last exited, age; one
// page of rows at a time, however many there are.

import { acquire } from '../store.js';
import { KINDS } from '../api.js';
import { h, title, liveState, statusCell } from '../dom.js';
import { Table, keepDrawn } from '../table.js';
import { age, instanceStatus, perf } from '../format.js';

/** The columns of an Instance, shared by every table of Instances. */
export function instanceColumns({ service = true } = {}) {
  const ns = (o) => encodeURIComponent(o.metadata.namespace);
  return [
    { title: 'Instance', cell: (o) => o.metadata.name },
    service
      ? { title: 'Service', wide: true, cell: (o) => h('a', { href: `#/services/${ns(o)}/${encodeURIComponent(o.spec.service)}` }, `${o.metadata.namespace}/${o.spec.service}`) }
      : null,
    { title: 'Phase', cell: (o) => statusCell(instanceStatus(o)) },
    { title: 'Cluster', cell: (o) => o.spec.cluster || '–' },
    { title: 'Node', cell: (o) => o.spec.node || '–' },
    { title: 'IP', cell: (o) => (o.status && (o.status.instanceIP || o.status.hostIP)) || '–' },
    { title: 'Restarts', cell: (o) => String((o.status && o.status.restartCount) || 0) },
    {
      title: 'Last exit',
      wide: true,
      cell: (o) => {
        const s = o.status || {};
        if (s.exitCode === undefined || s.exitCode === null) return '–';
        return `${s.exitCode}${s.reason ? ` (${s.reason})` : ''}`;
      },
    },
    { title: 'Age', cell: (o) => age(o.metadata.creationTimestamp) },
    {
      title: 'Logs',
      cell: (o) => h('a', { href: `#/logs/${ns(o)}/${encodeURIComponent(o.metadata.name)}`, 'aria-label': `Logs of ${o.metadata.name}` }, 'Logs'),
    },
  ].filter(Boolean);
}

export function show(main) {
  const held = acquire(`${KINDS.instances.group}/instances`);
  const c = held.collection;
  const live = liveState(c);
  const table = new Table({ caption: 'Instances', empty: 'No Instances.', columns: instanceColumns() });
  const render = () => {
    live.update();
    table.update(c.keys(), (k) => c.get(k));
    if (c.size) perf.firstScreen('instances');
  };
  main.append(title('Instances'), live.element, table.element);
  return keepDrawn(held, table, render);
}
