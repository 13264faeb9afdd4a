// One cluster: its status and room, its nodes (the cluster's own API, read through the
// root), the Instances placed on it, and a form to set its location on the map.

import { acquire } from '../store.js';
import { KINDS, objectPath, send } from '../api.js';
import { h, title, liveState, statusCell, facts, announce, errorText } from '../dom.js';
import { Table } from '../table.js';
import { age, clusterStatus, nodeStatus, cpu, memory, share, location } from '../format.js';
import { instanceColumns } from './instances.js';

function conditionsTable(object) {
  const list = (object.status && object.status.conditions) || [];
  if (!list.length) return h('p', { class: 'hint' }, 'No conditions reported yet.');
  return h(
    'table',
    { class: 'conditions' },
    h('caption', {}, 'Conditions'),
    h('thead', {}, h('tr', {}, ['Type', 'Status', 'Reason', 'Message', 'Since'].map((t) => h('th', { scope: 'col' }, t)))),
    h(
      'tbody',
      {},
      list.map((c) =>
        h(
          'tr',
          {},
          h('td', { 'data-label': 'Type' }, c.type),
          h('td', { 'data-label': 'Status' }, c.status),
          h('td', { 'data-label': 'Reason' }, c.reason || '–'),
          h('td', { 'data-label': 'Message' }, c.message || '–'),
          h('td', { 'data-label': 'Since' }, c.lastTransitionTime ? age(c.lastTransitionTime) : '–'),
        ),
      ),
    ),
  );
}

export { conditionsTable };

function locationForm(name, current) {
  const lat = h('input', { id: 'loc-lat', type: 'number', step: 'any', min: '-90', max: '90', required: true, value: current ? current.latitude : '' });
  const lon = h('input', { id: 'loc-lon', type: 'number', step: 'any', min: '-180', max: '180', required: true, value: current ? current.longitude : '' });
  const out = h('p', { role: 'status', class: 'result' });
  return h(
    'form',
    {
      class: 'inline card',
      on: {
        submit: async (e) => {
          e.preventDefault();
          try {
            await send('PATCH', objectPath(KINDS.clusters, null, name),
              { spec: { location: { latitude: Number(lat.value), longitude: Number(lon.value) } } },
              'application/merge-patch+json');
            out.textContent = 'Location saved.';
            announce(`Location of ${name} saved`);
          } catch (err) {
            out.textContent = errorText(err);
          }
        },
      },
    },
    h('h2', {}, 'Location on the map'),
    h('label', { for: 'loc-lat' }, 'Latitude (°N)'),
    lat,
    h('label', { for: 'loc-lon' }, 'Longitude (°E)'),
    lon,
    h('button', { type: 'submit' }, 'Save location'),
    out,
  );
}

export function show(main, name) {
  const clusters = acquire(`${KINDS.clusters.group}/clusters`);
  const nodes = acquire(`${KINDS.clusters.group}/clusters/${encodeURIComponent(name)}/nodes`);
  const instances = acquire(`${KINDS.instances.group}/instances`, { fieldSelector: `spec.cluster=${name}` });
  const c = clusters.collection;
  const summary = h('div', { class: 'summary' });
  const nodeLive = liveState(nodes.collection);
  const instLive = liveState(instances.collection);
  let formShown = false;
  const formSlot = h('div');
  const nodeTable = new Table({
    caption: `Nodes of ${name}`,
    empty: 'No nodes (or the cluster cannot be reached through the root).',
    name: (o) => o.metadata.name,
    columns: [
      { title: 'Node', cell: (o) => o.metadata.name },
      { title: 'Status', cell: (o) => statusCell(nodeStatus(o)) },
      { title: 'Address', cell: (o) => o.spec.address || '–' },
      { title: 'CPU', cell: (o) => share(o.status?.allocatable, o.status?.capacity, 'cpuMillicores', cpu) },
      { title: 'Memory', cell: (o) => share(o.status?.allocatable, o.status?.capacity, 'memoryMiB', memory) },
      { title: 'Runtimes', wide: true, cell: (o) => (o.spec.runtimes || []).join(', ') },
      { title: 'Subnet', wide: true, cell: (o) => o.status?.subnet || '–' },
      { title: 'Heartbeat', wide: true, cell: (o) => (o.status?.lastHeartbeat ? `${age(o.status.lastHeartbeat)} ago` : 'never') },
    ],
  });
  const instTable = new Table({
    caption: `Instances placed on ${name}`,
    empty: 'No Instances are placed on this cluster.',
    columns: instanceColumns(),
  });

  function renderCluster() {
    const o = c.get(name);
    if (!o) {
      summary.replaceChildren(h('p', { class: c.listed ? 'error' : 'hint' }, c.listed ? `There is no cluster ${name}.` : 'Loading…'));
      return;
    }
    const st = o.status || {};
    summary.replaceChildren(
      facts([
        ['Status', statusCell(clusterStatus(o))],
        ['Nodes', String((st.capacity || {}).nodes ?? '–')],
        ['CPU', share(st.allocatable, st.capacity, 'cpuMillicores', cpu)],
        ['Memory', share(st.allocatable, st.capacity, 'memoryMiB', memory)],
        ['Runtimes', (st.runtimes || []).join(', ') || '–'],
        ['Subnet', st.subnet || '–'],
        ['Location', location(o.spec.location)],
        ['API', st.apiEndpoint || '–'],
        ['Last heartbeat', st.lastHeartbeat ? `${age(st.lastHeartbeat)} ago` : 'never'],
      ]),
      conditionsTable(o),
    );
    if (!formShown) {
      formShown = true;
      formSlot.replaceChildren(locationForm(name, o.spec.location));
    }
  }
  const renderNodes = () => {
    nodeLive.update();
    nodeTable.update(nodes.collection.keys(), (k) => nodes.collection.get(k));
  };
  const renderInstances = () => {
    instLive.update();
    instTable.update(instances.collection.keys(), (k) => instances.collection.get(k));
  };
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/clusters' }, 'Clusters'), ' › ', name),
    title(`Cluster ${name}`),
    summary,
    h('h2', {}, 'Nodes'),
    nodeLive.element,
    nodeTable.element,
    h('h2', {}, 'Instances'),
    instLive.element,
    instTable.element,
    formSlot,
  );
  const subs = [c.subscribe(renderCluster), nodes.collection.subscribe(renderNodes), instances.collection.subscribe(renderInstances)];
  renderCluster();
  renderNodes();
  renderInstances();
  return {
    stop() {
      subs.forEach((u) => u());
      nodeTable.stop();
      instTable.stop();
      [clusters, nodes, instances].forEach((x) => x.release());
    },
  };
}
