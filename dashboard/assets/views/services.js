// Every Service: replicas wanted, existing and ready, its service IPs, and its state in
// words, with the reason when its Instances cannot be placed.

import { acquire } from '../store.js';
import { KINDS } from '../api.js';
import { h, title, liveState, statusCell } from '../dom.js';
import { Table, keepDrawn } from '../table.js';
import { age, serviceStatus, perf } from '../format.js';

export function serviceIps(o) {
  const a = (o.spec && o.spec.addressing) || {};
  const ips = [];
  const rr = (o.status && o.status.serviceIP) || a.roundRobinIP;
  if (rr) ips.push(`${rr} (round robin)`);
  if (a.closestIP) ips.push(`${a.closestIP} (closest)`);
  return ips.join(', ') || '–';
}

export function show(main) {
  const held = acquire(`${KINDS.services.group}/services`);
  const c = held.collection;
  const live = liveState(c);
  const table = new Table({
    caption: 'Services',
    empty: 'No Services yet: apply one.',
    columns: [
      {
        title: 'Service',
        cell: (o) => h('a', { href: `#/services/${encodeURIComponent(o.metadata.namespace)}/${encodeURIComponent(o.metadata.name)}` }, o.metadata.name),
      },
      { title: 'Namespace', cell: (o) => o.metadata.namespace },
      { title: 'Replicas', cell: (o) => String(o.spec.replicas ?? 1) },
      { title: 'Ready', cell: (o) => `${(o.status && o.status.readyReplicas) || 0} of ${(o.status && o.status.replicas) || 0}` },
      { title: 'Service IP', cell: serviceIps },
      { title: 'Status', cell: (o) => statusCell(serviceStatus(o)) },
      { title: 'Runtime', wide: true, cell: (o) => o.spec.template.runtime || 'container' },
      { title: 'Age', wide: true, cell: (o) => age(o.metadata.creationTimestamp) },
    ],
  });
  const render = () => {
    live.update();
    table.update(c.keys(), (k) => c.get(k));
    if (c.size) perf.firstScreen('services');
  };
  main.append(
    title('Services'),
    h('p', {}, h('a', { href: '#/apply', class: 'button' }, 'Apply a manifest or SLA')),
    live.element,
    table.element,
  );
  return keepDrawn(held, table, render);
}
