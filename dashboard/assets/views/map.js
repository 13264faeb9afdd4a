// Clusters: a map of where they are (their `spec.location`, equirectangular, over a
// coarse outline of the land), each a labelled marker with its status word; the ones
// without a location listed beside it; and a table with readiness, nodes and room.

import { acquire, keyOf } from '../store.js';
import { KINDS } from '../api.js';
import { h, s, title, liveState, statusCell } from '../dom.js';
import { Table, keepDrawn } from '../table.js';
import { age, clusterStatus, cpu, memory, share, location, perf } from '../format.js';
import { WIDTH, HEIGHT, project, landPath } from '../world.js';

function graticule() {
  const lines = [];
  for (let lon = -150; lon <= 150; lon += 30) {
    const [x] = project(lon, 0);
    lines.push(s('line', { x1: x, y1: 0, x2: x, y2: HEIGHT, class: lon === 0 ? 'meridian' : '' }));
  }
  for (let lat = -60; lat <= 60; lat += 30) {
    const [, y] = project(0, lat);
    lines.push(s('line', { x1: 0, y1: y, x2: WIDTH, y2: y, class: lat === 0 ? 'equator' : '' }));
  }
  return s('g', { class: 'graticule', 'aria-hidden': 'true' }, lines);
}

function marker(cluster) {
  const status = clusterStatus(cluster);
  const loc = cluster.spec.location;
  const [x, y] = project(loc.longitude, loc.latitude);
  const name = cluster.metadata.name;
  const label = `${name}: ${status.word}`;
  const left = x > WIDTH - 120;
  return s(
    'a',
    { href: `#/clusters/${encodeURIComponent(name)}`, class: `marker tone-${status.tone}`, 'aria-label': `${label}, ${location(loc)}` },
    s('title', {}, `${label} (${location(loc)})`),
    s('circle', { cx: x, cy: y, r: 5 }),
    s('circle', { cx: x, cy: y, r: 9, class: 'halo' }),
    s(
      'text',
      { x: left ? x - 12 : x + 12, y: y + 4, 'text-anchor': left ? 'end' : 'start' },
      s('tspan', { class: 'name' }, name),
      s('tspan', { class: 'word', dx: '6' }, status.word),
    ),
  );
}

export function show(main) {
  const held = acquire(`${KINDS.clusters.group}/clusters`);
  const c = held.collection;
  const live = liveState(c);
  const markers = s('g', { class: 'markers' });
  const svg = s(
    'svg',
    { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-labelledby': 'map-caption', class: 'world' },
    s('rect', { x: 0, y: 0, width: WIDTH, height: HEIGHT, class: 'sea' }),
    graticule(),
    s('path', { d: landPath(), class: 'land', 'aria-hidden': 'true' }),
    markers,
  );
  const unplaced = h('ul', { class: 'unplaced' });
  const unplacedBox = h('div', { class: 'unplaced-box', hidden: true },
    h('h2', {}, 'Not on the map'),
    h('p', { class: 'hint' }, 'These clusters have no ', h('code', {}, 'spec.location'),
      ' (start them with ', h('code', {}, '--location LAT,LON'), ', or set it on the cluster’s page).'),
    unplaced);
  const table = new Table({
    caption: 'Clusters',
    empty: 'No cluster has joined yet.',
    name: (o) => o.metadata.name,
    columns: [
      { title: 'Name', cell: (o) => h('a', { href: `#/clusters/${encodeURIComponent(o.metadata.name)}` }, o.metadata.name) },
      { title: 'Status', cell: (o) => statusCell(clusterStatus(o)) },
      { title: 'Nodes', cell: (o) => String(((o.status || {}).capacity || {}).nodes ?? '–') },
      { title: 'CPU', cell: (o) => share(o.status?.allocatable, o.status?.capacity, 'cpuMillicores', cpu) },
      { title: 'Memory', cell: (o) => share(o.status?.allocatable, o.status?.capacity, 'memoryMiB', memory) },
      { title: 'Runtimes', wide: true, cell: (o) => ((o.status || {}).runtimes || []).join(', ') || '–' },
      { title: 'Location', wide: true, cell: (o) => location(o.spec.location) },
      { title: 'Heartbeat', wide: true, cell: (o) => (o.status?.lastHeartbeat ? `${age(o.status.lastHeartbeat)} ago` : 'never') },
    ],
  });

  function render() {
    live.update();
    const keys = c.keys();
    const located = [];
    const rest = [];
    for (const k of keys) {
      const o = c.get(k);
      (o.spec && o.spec.location ? located : rest).push(o);
    }
    // A marker is drawn again only when what it shows changed (a heartbeat changes
    // nothing on the map), so a focused marker keeps the focus.
    const drawn = new Map([...markers.children].map((m) => [m.dataset.sig, m]));
    const next = located.map((o) => {
      const loc = o.spec.location;
      const sig = `${o.metadata.name}|${clusterStatus(o).word}|${loc.latitude}|${loc.longitude}`;
      const m = drawn.get(sig) || marker(o);
      m.dataset.sig = sig;
      return m;
    });
    if (next.length !== markers.children.length || next.some((m, i) => markers.children[i] !== m)) {
      markers.replaceChildren(...next);
    }
    unplaced.replaceChildren(
      ...rest.map((o) => {
        const st = clusterStatus(o);
        return h('li', {}, h('a', { href: `#/clusters/${encodeURIComponent(keyOf(o))}` }, o.metadata.name), ' ', statusCell(st));
      }),
    );
    unplacedBox.hidden = rest.length === 0;
    table.update(keys, (k) => c.get(k));
    if (c.listed) perf.firstScreen('clusters');
  }

  main.append(
    title('Clusters'),
    live.element,
    h('figure', { class: 'map' }, svg, h('figcaption', { id: 'map-caption' },
      'Where the clusters are (their spec.location); each marker names the cluster and its status.')),
    unplacedBox,
    table.element,
  );
  return keepDrawn(held, table, render);
}
