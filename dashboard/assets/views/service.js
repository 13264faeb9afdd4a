// One Service: its state, conditions (with placement reasons), service IPs, its
// Instances live, its recent Events; scale it, delete it (after a confirmation).

import { acquire } from '../store.js';
import { KINDS, call, objectPath, send } from '../api.js';
import { h, title, liveState, statusCell, facts, announce, errorText } from '../dom.js';
import { Table } from '../table.js';
import { age, serviceStatus, eventStatus } from '../format.js';
import { instanceColumns } from './instances.js';
import { conditionsTable } from './cluster.js';
import { serviceIps } from './services.js';

export function eventColumns() {
  return [
    { title: 'Type', cell: (o) => statusCell(eventStatus(o)) },
    { title: 'Reason', cell: (o) => o.reason },
    { title: 'Object', cell: (o) => `${o.involvedObject.kind} ${o.involvedObject.name}` },
    { title: 'Message', cell: (o) => o.message },
    { title: 'Count', wide: true, cell: (o) => String(o.count || 1) },
    { title: 'Last seen', cell: (o) => age(o.lastTimestamp || o.metadata.creationTimestamp) },
  ];
}

/** Keys of events, newest first. */
export function newestFirst(keys, get) {
  const when = (k) => {
    const o = get(k);
    return (o && (o.lastTimestamp || o.metadata.creationTimestamp)) || '';
  };
  return [...keys].sort((a, b) => (when(a) < when(b) ? 1 : when(a) > when(b) ? -1 : 0));
}

function confirmDelete(what, onYes) {
  const yes = h('button', { type: 'button', class: 'danger' }, 'Delete');
  const no = h('button', { type: 'button' }, 'Cancel');
  const dialog = h(
    'dialog',
    { class: 'confirm', 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-text' },
    h('h2', { id: 'confirm-title' }, 'Delete?'),
    h('p', { id: 'confirm-text' }, `Delete ${what}? Its Instances are stopped and removed. This cannot be undone.`),
    h('div', { class: 'actions' }, no, yes),
  );
  no.addEventListener('click', () => dialog.close());
  yes.addEventListener('click', () => {
    dialog.close();
    onYes();
  });
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  no.focus();
}

export function show(main, namespace, name) {
  const path = objectPath(KINDS.services, namespace, name);
  const services = acquire(`${KINDS.services.group}/services`);
  const instances = acquire(`${KINDS.instances.group}/namespaces/${encodeURIComponent(namespace)}/instances`, {
    fieldSelector: `spec.service=${name}`,
  });
  const events = acquire(`${KINDS.events.group}/namespaces/${encodeURIComponent(namespace)}/events`);
  const key = `${namespace}/${name}`;
  const summary = h('div', { class: 'summary' });
  const conditions = h('div', { class: 'conditions-slot' });
  const instLive = liveState(instances.collection);
  const result = h('p', { class: 'result', role: 'status' });

  const replicas = h('input', { id: 'scale-replicas', type: 'number', min: '0', step: '1', required: true, inputmode: 'numeric' });
  const scale = h(
    'form',
    {
      class: 'inline card',
      id: 'scale-form',
      on: {
        submit: async (e) => {
          e.preventDefault();
          const n = Number(replicas.value);
          try {
            await send('PATCH', `${path}?fieldManager=oakestra-dashboard-scale`, { spec: { replicas: n } }, 'application/merge-patch+json');
            result.textContent = `Scaled to ${n}.`;
            announce(`${name} scaled to ${n}`);
          } catch (err) {
            result.textContent = `Not scaled: ${errorText(err)}`;
          }
        },
      },
    },
    h('label', { for: 'scale-replicas' }, 'Replicas'),
    replicas,
    h('button', { type: 'submit' }, 'Scale'),
  );
  const remove = h(
    'button',
    {
      type: 'button',
      class: 'danger',
      id: 'delete-service',
      on: {
        click: () =>
          confirmDelete(`Service ${namespace}/${name}`, async () => {
            try {
              await call(path, { method: 'DELETE' });
              announce(`Service ${name} deleted`);
              location.hash = '#/services';
            } catch (err) {
              result.textContent = `Not deleted: ${errorText(err)}`;
            }
          }),
      },
    },
    'Delete…',
  );

  const instTable = new Table({
    caption: `Instances of ${name}`,
    empty: 'No Instances (yet).',
    columns: instanceColumns({ service: false }),
  });
  const eventTable = new Table({
    caption: `Events of ${name} and its Instances`,
    empty: 'No events.',
    pageSize: 20,
    name: (o) => `${o.reason} ${o.message}`,
    columns: eventColumns(),
  });

  let scaleSet = false;
  function renderService() {
    const o = services.collection.get(key);
    if (!o) {
      summary.replaceChildren(
        h('p', { class: services.collection.listed ? 'error' : 'hint' },
          services.collection.listed ? `There is no Service ${key}.` : 'Loading…'),
      );
      return;
    }
    const st = o.status || {};
    const t = o.spec.template || {};
    if (!scaleSet || document.activeElement !== replicas) {
      replicas.value = String(o.spec.replicas ?? 1);
      scaleSet = true;
    }
    summary.replaceChildren(
      facts([
        ['Status', statusCell(serviceStatus(o))],
        ['Replicas', String(o.spec.replicas ?? 1)],
        ['Ready', `${st.readyReplicas || 0} of ${st.replicas || 0}`],
        ['Service IP', serviceIps(o)],
        ['Runtime', t.runtime || 'container'],
        ['Runs', t.image || [t.executable, ...(t.command || []), ...(t.args || [])].filter(Boolean).join(' ') || '–'],
        ['Requests', `${(t.resources || {}).cpuMillicores ?? 0}m CPU, ${(t.resources || {}).memoryMiB ?? 0} MiB`],
        ['Created', `${age(o.metadata.creationTimestamp)} ago`],
      ]),
    );
    conditions.replaceChildren(conditionsTable(o));
  }
  const renderInstances = () => {
    instLive.update();
    instTable.update(instances.collection.keys(), (k) => instances.collection.get(k));
  };
  const renderEvents = () => {
    const c = events.collection;
    const mine = c.keys().filter((k) => {
      const o = c.get(k);
      const about = o.involvedObject || {};
      return about.name === name || (about.kind === 'Instance' && about.name.startsWith(`${name}-`));
    });
    eventTable.update(newestFirst(mine, (k) => c.get(k)), (k) => c.get(k));
  };

  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/services' }, 'Services'), ' › ', `${namespace}/${name}`),
    title(`Service ${name}`),
    summary,
    h('div', { class: 'actions' }, scale, remove),
    result,
    h('h2', {}, 'Instances'),
    instLive.element,
    instTable.element,
    h('h2', {}, 'Events'),
    eventTable.element,
    conditions,
  );
  const subs = [
    services.collection.subscribe(renderService),
    instances.collection.subscribe(renderInstances),
    events.collection.subscribe(renderEvents),
  ];
  renderService();
  renderInstances();
  renderEvents();
  return {
    stop() {
      subs.forEach((u) => u());
      instTable.stop();
      eventTable.stop();
      [services, instances, events].forEach((x) => x.release());
    },
  };
}
