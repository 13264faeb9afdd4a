// The dashboard's entry: the session decides between the login and the views, and the
// address after `#` picks the view (so every view can be bookmarked and the browser's
// back button works). A view is `show(main, …params)` returning `{stop()}`, which
// releases what it watches.

import { session, endSession, onSessionEnd } from './api.js';
import { forgetAll } from './store.js';
import * as login from './views/login.js';
import * as map from './views/map.js';
import * as cluster from './views/cluster.js';
import * as services from './views/services.js';
import * as service from './views/service.js';
import * as instances from './views/instances.js';
import * as events from './views/events.js';
import * as apply from './views/apply.js';
import * as logs from './views/logs.js';

const ROUTES = [
  [/^#\/clusters\/([^/]+)$/, cluster, 'clusters'],
  [/^#\/clusters$/, map, 'clusters'],
  [/^#\/services\/([^/]+)\/([^/]+)$/, service, 'services'],
  [/^#\/services$/, services, 'services'],
  [/^#\/instances$/, instances, 'instances'],
  [/^#\/events$/, events, 'events'],
  [/^#\/apply$/, apply, 'apply'],
  [/^#\/logs\/([^/]+)\/([^/]+)$/, logs, 'instances'],
];

let current = null;
let why = '';

function chrome(signedIn) {
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('logout').hidden = !signedIn;
  const who = document.getElementById('who');
  who.hidden = !signedIn;
  who.textContent = signedIn ? `Signed in (${session().how})` : '';
}

function route() {
  const hash = location.hash;
  // In-page anchors (the skip link) are not views.
  if (hash && !hash.startsWith('#/')) return;
  if (current) current.stop();
  current = null;
  const main = document.getElementById('main');
  main.replaceChildren();
  if (!session()) {
    chrome(false);
    document.title = 'Log in · Oakestra';
    current = login.show(main, () => {
      why = '';
      route();
    }, why);
    return;
  }
  chrome(true);
  for (const [pattern, view, nav] of ROUTES) {
    const m = hash.match(pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.view === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    current = view.show(main, ...m.slice(1).map(decodeURIComponent));
    const h1 = main.querySelector('h1');
    document.title = `${h1 ? h1.textContent : 'Oakestra'} · Oakestra`;
    if (h1 && document.activeElement === document.body) h1.focus({ preventScroll: true });
    return;
  }
  location.replace('#/clusters');
}

document.getElementById('logout').addEventListener('click', () => endSession('You logged out.'));
document.getElementById('skip').addEventListener('click', (e) => {
  e.preventDefault();
  document.getElementById('main').focus();
});
onSessionEnd((reason) => {
  forgetAll();
  why = reason || '';
  route();
});
window.addEventListener('hashchange', () => {
  // Keyboard users land on the new view's title.
  document.activeElement && document.activeElement.blur && document.activeElement.blur();
  route();
});
route();
