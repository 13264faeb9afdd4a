// Apply: a manifest (YAML, several documents, or JSON) or an Oakestra SLA, pasted or
// uploaded. The root's manifest reader (`POST /ui/api/documents`) splits it into
// objects and says where each field is written; each object is then server-side
// applied to the API with this session's token (`fieldManager=oakestra-dashboard`):
// first all as a dry run, so that nothing is written when one is refused, then for
// real. The API's validation errors are shown under the lines of the fields they name.

import { call, send, ApiError } from '../api.js';
import { h, title, announce, errorText } from '../dom.js';

const EXAMPLE = `apiVersion: oakestra.io/v1
kind: Service
metadata:
  name: hello
  namespace: default
spec:
  replicas: 1
  template:
    runtime: process
    executable: /bin/sh
    command: [-c, 'while true; do echo "hello from $OAKESTRA_INSTANCE"; sleep 5; done']
    resources: {cpuMillicores: 100, memoryMiB: 32}
`;

/** The line of `field` in a document's `fields`, or of the closest enclosing one. */
export function lineOf(fields, field) {
  let f = (field || '').replace(/^\./, '');
  while (f) {
    if (f in fields) return fields[f];
    const cut = Math.max(f.lastIndexOf('.'), f.lastIndexOf('['));
    if (cut <= 0) break;
    f = f.slice(0, cut);
  }
  return null;
}

function describe(doc) {
  return `${doc.kind} ${doc.namespace ? `${doc.namespace}/` : ''}${doc.name}`;
}

/** Problems as `{line, text, document}` from the API's refusal of `doc`. */
function problemsOf(doc, err) {
  const causes = (err instanceof ApiError && err.causes) || [];
  const fielded = causes.filter((c) => c.field);
  if (fielded.length) {
    return fielded.map((c) => ({
      document: doc.document,
      line: lineOf(doc.fields, c.field) || doc.line,
      field: c.field.replace(/^\./, ''),
      text: `${c.field.replace(/^\./, '')}: ${c.message}`,
      about: describe(doc),
      conflict: c.reason === 'FieldManagerConflict',
    }));
  }
  return [{ document: doc.document, line: doc.line, text: errorText(err), about: describe(doc) }];
}

export function show(main) {
  const text = h('textarea', {
    id: 'manifest',
    rows: '18',
    spellcheck: 'false',
    autocomplete: 'off',
    'aria-describedby': 'manifest-hint',
  });
  const file = h('input', { type: 'file', id: 'manifest-file', accept: '.yaml,.yml,.json,application/json,text/yaml' });
  const force = h('input', { type: 'checkbox', id: 'apply-force' });
  const applyButton = h('button', { type: 'submit', class: 'primary', id: 'apply-button' }, 'Apply');
  const checkButton = h('button', { type: 'button', id: 'check-button' }, 'Check only (dry run)');
  const out = h('section', { class: 'apply-result', 'aria-live': 'polite', id: 'apply-result' });

  file.addEventListener('change', async () => {
    const f = file.files && file.files[0];
    if (f) {
      text.value = await f.text();
      announce(`${f.name} loaded`);
    }
  });

  function annotated(problems) {
    const byLine = new Map();
    for (const p of problems) {
      if (p.line) {
        if (!byLine.has(p.line)) byLine.set(p.line, []);
        byLine.get(p.line).push(p);
      }
    }
    const lines = text.value.split('\n');
    const rows = [];
    let n = 0;
    for (const line of lines) {
      n += 1;
      const bad = byLine.has(n);
      rows.push(h('div', { class: bad ? 'line bad' : 'line' }, h('span', { class: 'no', 'aria-hidden': 'true' }, String(n)), h('code', {}, line || ' ')));
      for (const p of byLine.get(n) || []) {
        rows.push(
          h('div', { class: 'problem', id: `problem-line-${n}`, 'data-field': p.field || '' },
            h('strong', {}, `Line ${n}`), p.about ? ` (${p.about})` : '', ': ', p.text),
        );
      }
    }
    return h(
      'div',
      { class: 'refused' },
      h('h2', { id: 'refused-title', tabindex: '-1' }, problems.length === 1 ? 'Refused: 1 problem' : `Refused: ${problems.length} problems`),
      h('p', {}, 'Nothing was written. Each problem is shown under the line it is about:'),
      problems.some((p) => p.conflict)
        ? h('p', { class: 'notice' }, 'Another field manager set some of these fields (a scale from this page is one): tick “Force” and apply again to take them over.')
        : null,
      h('ul', { class: 'problems' }, problems.map((p) => h('li', { class: 'problem-summary' }, p.line ? `Line ${p.line}: ` : '', p.text))),
      h('div', { class: 'annotated', role: 'group', 'aria-labelledby': 'refused-title' }, rows),
    );
  }

  function refused(problems) {
    out.replaceChildren(annotated(problems));
    out.querySelector('#refused-title').focus();
    announce(`Refused: ${problems.map((p) => p.text).join('; ')}`);
  }

  async function run(dryRunOnly) {
    out.replaceChildren(h('p', { class: 'live' }, dryRunOnly ? 'Checking…' : 'Applying…'));
    let docs;
    try {
      const response = await fetchDocuments(text.value);
      if (response.problems) {
        refused(response.problems.map((p) => ({ ...p, text: p.message, about: p.document ? `document ${p.document}` : '' })));
        return;
      }
      docs = response.documents;
    } catch (err) {
      out.replaceChildren(h('p', { class: 'error', role: 'alert' }, errorText(err)));
      return;
    }
    const query = (dry) => `?fieldManager=oakestra-dashboard${force.checked ? '&force=true' : ''}${dry ? '&dryRun=All' : ''}`;
    const applyOne = (doc, dry) =>
      call(doc.path + query(dry), { method: 'PATCH', body: JSON.stringify(doc.object), type: 'application/apply-patch+yaml' });
    // Dry run first: nothing is written unless every object passes. An object in a
    // Namespace this text creates cannot be checked before the Namespace exists.
    const created = new Set(docs.filter((d) => d.kind === 'Namespace').map((d) => d.name));
    const problems = [];
    for (const doc of docs) {
      if (doc.namespace && created.has(doc.namespace)) continue;
      try {
        await applyOne(doc, true);
      } catch (err) {
        problems.push(...problemsOf(doc, err));
      }
    }
    if (problems.length) {
      refused(problems);
      return;
    }
    if (dryRunOnly) {
      out.replaceChildren(h('p', { class: 'ok', role: 'status' }, `All ${docs.length} objects pass the API's checks (nothing was written).`));
      return;
    }
    const results = [];
    for (const doc of docs) {
      try {
        const response = await applyOne(doc, false);
        results.push({ doc, word: response.status === 201 ? 'created' : 'applied' });
      } catch (err) {
        refused(problemsOf(doc, err));
        return;
      }
    }
    out.replaceChildren(
      h('h2', { tabindex: '-1', id: 'applied-title' }, 'Applied'),
      h(
        'ul',
        { class: 'applied' },
        results.map(({ doc, word }) =>
          h(
            'li',
            {},
            doc.kind === 'Service'
              ? h('a', { href: `#/services/${encodeURIComponent(doc.namespace)}/${encodeURIComponent(doc.name)}` }, describe(doc))
              : describe(doc),
            `: ${word}`,
          ),
        ),
      ),
    );
    out.querySelector('#applied-title').focus();
    announce(`Applied ${results.length} objects`);
  }

  const form = h(
    'form',
    {
      class: 'apply',
      on: {
        submit: (e) => {
          e.preventDefault();
          run(false);
        },
      },
    },
    h('label', { for: 'manifest' }, 'Manifest or Oakestra SLA'),
    h('p', { class: 'hint', id: 'manifest-hint' }, 'YAML (documents separated by ', h('code', {}, '---'), '), JSON, or an SLA (',
      h('code', {}, 'sla_version: v2.0'), '). Applied server-side as ', h('code', {}, 'oakestra-dashboard'), '.'),
    text,
    h('div', { class: 'toolbar' },
      h('label', { for: 'manifest-file' }, 'Or upload a file'),
      file,
      h('button', { type: 'button', on: { click: () => { text.value = EXAMPLE; text.focus(); } } }, 'Fill in an example')),
    h('p', { class: 'check' }, force, h('label', { for: 'apply-force' }, 'Force: take over fields another manager set (e.g. replicas after a scale)')),
    h('div', { class: 'actions' }, applyButton, checkButton),
  );
  checkButton.addEventListener('click', () => run(true));
  main.append(title('Apply'), form, out);
  return { stop() {} };
}

async function fetchDocuments(text) {
  try {
    return await send('POST', '/ui/api/documents', text, 'text/plain; charset=utf-8');
  } catch (err) {
    if (err instanceof ApiError && err.code === 400 && err.status && err.status.problems) return err.status;
    throw err;
  }
}
