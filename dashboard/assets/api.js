// The API, as this page reaches it: every request goes to the page's own origin (the
// root's API) with the session's bearer token. The session lives in sessionStorage
// (this tab only, gone when it closes). A 401 tries the Oakestra login's refresh token
// once, then ends the session, which sends the page back to the login.

const KEY = 'oakestra.dashboard.session';
const listeners = new Set();

/** The session: `{token, refresh?, how}`, or null. */
export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    return null;
  }
}

export function setSession(value) {
  sessionStorage.setItem(KEY, JSON.stringify(value));
}

/** End the session (the page shows the login again). */
export function endSession(why) {
  const had = session() !== null;
  sessionStorage.removeItem(KEY);
  if (had) listeners.forEach((f) => f(why));
}

/** Call `f(why)` when the session ends. */
export function onSessionEnd(f) {
  listeners.add(f);
}

/** A refusal of the API: its HTTP status and the Kubernetes `Status` it sent. */
export class ApiError extends Error {
  constructor(code, status, fallback) {
    super((status && status.message) || fallback || `HTTP ${code}`);
    this.code = code;
    this.status = status || null;
    this.reason = (status && status.reason) || '';
    this.causes = (status && status.details && status.details.causes) || [];
  }
}

async function refusal(response) {
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: the text is the message.
  }
  return new ApiError(response.status, body, text.slice(0, 300));
}

let refreshing = null;

/** A new access token from the Oakestra login's refresh token; false without one. */
async function refresh() {
  const s = session();
  if (!s || !s.refresh) return false;
  if (!refreshing) {
    refreshing = fetch('/api/auth/refresh', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: s.refresh }),
      credentials: 'omit',
    })
      .then(async (r) => {
        if (!r.ok) return false;
        const { token } = await r.json();
        setSession({ ...session(), token });
        return true;
      })
      .catch(() => false)
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

/**
 * `fetch` of `path` with the session's token; a 401 refreshes once, then ends the
 * session. Resolves to the Response when it is OK, else throws an ApiError.
 */
export async function call(path, { method = 'GET', body, type, signal, token } = {}) {
  for (let attempt = 0; ; attempt++) {
    const bearer = token || (session() && session().token);
    const headers = { Accept: 'application/json' };
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (type) headers['Content-Type'] = type;
    const response = await fetch(path, {
      method,
      body,
      headers,
      signal,
      credentials: 'omit',
      cache: 'no-store',
    });
    if (response.ok) return response;
    if (response.status === 401 && !token) {
      if (attempt === 0 && (await refresh())) continue;
      endSession('The API no longer accepts this session: log in again.');
    }
    throw await refusal(response);
  }
}

/** GET `path` as JSON. */
export async function getJson(path, options = {}) {
  return (await call(path, options)).json();
}

/** A write; the answer as JSON. */
export async function send(method, path, body, type = 'application/json', options = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return (await call(path, { ...options, method, body: text, type })).json();
}

/** Read a newline-delimited JSON stream (a watch), calling `onItem` per line. */
export async function readLines(response, onItem) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line.trim()) onItem(JSON.parse(line));
    }
  }
}

/** Log in with a bearer token: kept only if the API accepts it. */
export async function loginWithToken(token) {
  await getJson('/apis/oakestra.io/v1/clusters?limit=1', { token });
  setSession({ token, how: 'token' });
}

/** Log in through Oakestra's login (user and password): its tokens are the session. */
export async function loginWithPassword(username, password) {
  const response = await fetch('/api/auth/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password }),
    credentials: 'omit',
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.message || `HTTP ${response.status}`);
  }
  const { token, refresh_token: refreshToken } = await response.json();
  setSession({ token, refresh: refreshToken, how: `user ${username}` });
}

/** The path of object `name` of a kind (`/apis/oakestra.io/v1`, `services`). */
export function objectPath(kindPath, namespace, name) {
  const ns = namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  return `${kindPath.group}${ns}/${kindPath.plural}/${encodeURIComponent(name)}`;
}

/** The kinds this page shows, as paths. */
export const KINDS = {
  clusters: { group: '/apis/oakestra.io/v1', plural: 'clusters' },
  services: { group: '/apis/oakestra.io/v1', plural: 'services' },
  instances: { group: '/apis/oakestra.io/v1', plural: 'instances' },
  events: { group: '/apis/oakestra.io/v1', plural: 'events' },
};
