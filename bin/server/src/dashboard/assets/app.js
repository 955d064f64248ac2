// Morpheus dashboard: the actions (POSTs to the JSON API) and the live updates
// (/api/v1/events over WebSocket). Data from runs, logs and specs is only ever put on
// the page with textContent; the only HTML inserted is the server's own escaped
// render of a page section, parsed with DOMParser (whose scripts never run).
'use strict';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

function flash(message) {
  const box = document.getElementById('flash');
  if (!box) return;
  box.textContent = message;
  box.hidden = !message;
}

// Same-origin fetch: the token cookie (when tokens are configured) goes along.
async function api(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return data;
}

// Follows live events after `cursor`, reconnecting with the last cursor seen so
// nothing is missed or seen twice.
function follow(params, cursor, onEvent) {
  let last = cursor;
  let closed = false;
  const connect = () => {
    const query = new URLSearchParams(params);
    if (last) query.set('after', last);
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(`${scheme}//${location.host}/api/v1/events?${query}`);
    socket.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (_) { return; }
      if (event.cursor) last = event.cursor;
      onEvent(event);
    };
    socket.onclose = () => { if (!closed) setTimeout(connect, 1000); };
  };
  window.addEventListener('beforeunload', () => { closed = true; });
  connect();
}

// Replaces the sections with these ids by a fresh server render of this page.
let refreshing = null;
function refreshSections(ids) {
  if (refreshing) { refreshing.again = true; return; }
  refreshing = { again: false };
  fetch(location.pathname + location.search, { headers: { Accept: 'text/html' } })
    .then((response) => response.text())
    .then((html) => {
      const fresh = new DOMParser().parseFromString(html, 'text/html');
      for (const id of ids) {
        const now = document.getElementById(id);
        const next = fresh.getElementById(id);
        if (now && next) now.replaceWith(document.importNode(next, true));
      }
    })
    .catch(() => {})
    .finally(() => {
      const again = refreshing.again;
      refreshing = null;
      if (again) refreshSections(ids);
    });
}

// --- log lines ---------------------------------------------------------------

function logLine(line) {
  const item = document.createElement('li');
  item.className = `log lvl-${line.level}`;
  item.dataset.id = String(line.id);
  const ts = document.createElement('span');
  ts.className = 'ts';
  ts.textContent = (line.ts || '').replace('T', ' ').slice(11, 23);
  ts.title = line.ts || '';
  const level = document.createElement('span');
  level.className = 'lvl';
  level.textContent = line.level;
  const step = document.createElement('span');
  step.className = 'step';
  step.textContent = line.step || '';
  const message = document.createElement('span');
  message.className = 'msg';
  message.textContent = line.message;
  item.append(ts, level, step, message);
  return item;
}

class LogView {
  constructor(list, filter) {
    this.list = list;
    this.filter = filter;
    this.seen = new Set();
  }

  matches(line) {
    if (!this.filter) return true;
    const form = new FormData(this.filter);
    const level = form.get('level');
    const step = form.get('step');
    const q = String(form.get('q') || '').trim().toLowerCase();
    if (level && LEVELS.indexOf(line.level) < LEVELS.indexOf(level)) return false;
    if (step && line.step !== step) return false;
    if (q && !line.message.toLowerCase().includes(q)) return false;
    return true;
  }

  following() {
    return !this.filter || new FormData(this.filter).get('follow') === 'on';
  }

  add(line) {
    if (this.seen.has(line.id) || !this.matches(line)) return;
    this.seen.add(line.id);
    const atBottom = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 4;
    this.list.append(logLine(line));
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  async load() {
    const query = new URLSearchParams({ limit: '5000' });
    if (this.filter) {
      const form = new FormData(this.filter);
      for (const key of ['level', 'step', 'q']) {
        const value = String(form.get(key) || '').trim();
        if (value) query.set(key, value);
      }
    }
    const state = document.getElementById('log-state');
    try {
      const page = await api('GET', `${this.list.dataset.logs}?${query}`);
      this.list.replaceChildren();
      this.seen.clear();
      for (const line of page.logs) this.add(line);
      if (state) state.textContent = `${page.logs.length} lines`;
    } catch (error) {
      if (state) state.textContent = `logs: ${error.message}`;
    }
  }
}

// --- pages ---------------------------------------------------------------------

function runPage(root) {
  const runId = root.dataset.run;
  const filter = document.getElementById('log-filter');
  const logs = new LogView(document.getElementById('log-lines'), filter);
  filter.addEventListener('submit', (event) => { event.preventDefault(); logs.load(); });
  filter.addEventListener('change', (event) => {
    if (event.target.name !== 'follow') logs.load();
  });
  filter.addEventListener('input', (event) => {
    if (event.target.name === 'q') {
      clearTimeout(filter.searchTimer);
      filter.searchTimer = setTimeout(() => logs.load(), 250);
    }
  });
  logs.load();
  follow({ run: runId, events: 'run:new,run:update,log:append' }, root.dataset.live, (event) => {
    if (event.event === 'log:append') {
      if (logs.following()) logs.add(event.data);
    } else {
      refreshSections(['run-summary', 'steps', 'io']);
    }
  });
}

function runsList(table) {
  follow({ events: 'run:new,run:update' }, table.dataset.live, (event) => {
    const id = event.data && event.data.run_id;
    if (event.event === 'run:new') {
      const notice = document.getElementById('new-runs');
      if (notice) notice.hidden = false;
      return;
    }
    const row = id && table.querySelector(`tr[data-run-row="${CSS.escape(id)}"] .chip`);
    const status = event.data.current_status || event.data.status;
    if (row && status) {
      row.textContent = status;
      row.dataset.status = status;
      row.className = `chip s-${status}`;
    }
  });
}

function deploymentsPage(root) {
  const agent = root.dataset.agent;
  const list = document.getElementById('log-lines');
  const logs = list ? new LogView(list, null) : null;
  if (logs) logs.load();
  follow(
    { agent, events: 'deployment:run:new,deployment:run:update,deployment:log:append' },
    root.dataset.live,
    (event) => {
      if (event.event === 'deployment:log:append') {
        if (logs && event.data.runId === root.dataset.run) logs.add(event.data.line);
      } else {
        refreshSections(['dep-header', 'dep-runs', 'dep-info']);
      }
    },
  );
}

// --- the spec editor -----------------------------------------------------------

function specBody(form) {
  const data = new FormData(form);
  const text = (name) => String(data.get(name) || '').trim();
  const body = {
    name: text('name'),
    sourceDir: text('sourceDir'),
    installCommand: text('installCommand'),
    buildCommand: text('buildCommand'),
    startCommand: text('startCommand'),
    targetDefault: text('targetDefault') || 'preview',
    env: {},
  };
  if (text('runtimePort')) body.runtimePort = Number(text('runtimePort'));
  if (text('image')) body.image = text('image');
  if (text('cpu')) body.cpu = Number(text('cpu'));
  if (text('memory')) body.memory = text('memory');
  const keys = data.getAll('envKey');
  const values = data.getAll('envValue');
  keys.forEach((key, index) => {
    const name = String(key).trim();
    if (name) body.env[name] = String(values[index] || '');
  });
  return body;
}

function envRow() {
  const row = document.createElement('div');
  row.className = 'env-row';
  const key = document.createElement('input');
  key.name = 'envKey';
  key.placeholder = 'KEY';
  key.setAttribute('aria-label', 'Variable name');
  const value = document.createElement('input');
  value.name = 'envValue';
  value.placeholder = 'value';
  value.setAttribute('aria-label', 'Variable value');
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.dataset.action = 'env-remove';
  remove.textContent = '×';
  row.append(key, value, remove);
  return row;
}

async function startDeploy(agent) {
  const target = document.getElementById('start-target');
  const run = await api('POST', `/api/agents/${encodeURIComponent(agent)}/deployments/start`,
    target ? { target: target.value } : {});
  location.assign(`/agents/${encodeURIComponent(agent)}/deployments?run=${encodeURIComponent(run.id)}`);
}

// --- actions ---------------------------------------------------------------------

const actions = {
  'run-cancel': async (button) => {
    await api('POST', `/api/v1/runs/${button.dataset.run}/cancel`);
    refreshSections(['run-summary', 'steps', 'io']);
  },
  'run-resume': async (button) => {
    await api('POST', `/api/v1/runs/${button.dataset.run}/resume`);
    refreshSections(['run-summary', 'steps', 'io']);
  },
  'run-rerun': async (button) => {
    const started = await api('POST', `/api/v1/runs/${button.dataset.run}/rerun`);
    location.assign(`/runs/${started.run_id}`);
  },
  'run-fork': async (button) => {
    const started = await api('POST', `/api/v1/runs/${button.dataset.run}/fork`, { from_step: button.dataset.step });
    location.assign(`/runs/${started.run_id}`);
  },
  'schedule-pause': async (button) => {
    await api('POST', `/api/v1/schedules/${encodeURIComponent(button.dataset.schedule)}/pause`);
    location.reload();
  },
  'schedule-resume': async (button) => {
    await api('POST', `/api/v1/schedules/${encodeURIComponent(button.dataset.schedule)}/resume`);
    location.reload();
  },
  'dep-edit': async () => {
    const editor = document.getElementById('spec-editor');
    editor.hidden = !editor.hidden;
  },
  'env-add': async (button) => { button.before(envRow()); },
  'env-remove': async (button) => { button.closest('.env-row').remove(); },
  'spec-save': async () => {
    const root = document.getElementById('deployments');
    await api('PUT', `/api/agents/${encodeURIComponent(root.dataset.agent)}/deployments/spec`, specBody(document.getElementById('spec-editor')));
    location.reload();
  },
  'spec-save-deploy': async () => {
    const root = document.getElementById('deployments');
    const spec = await api('PUT', `/api/agents/${encodeURIComponent(root.dataset.agent)}/deployments/spec`, specBody(document.getElementById('spec-editor')));
    const target = document.getElementById('start-target');
    if (target) target.value = spec.targetDefault;
    await startDeploy(root.dataset.agent);
  },
  'dep-start': async () => { await startDeploy(document.getElementById('deployments').dataset.agent); },
  'dep-stop': async (button) => {
    const root = document.getElementById('deployments');
    await api('POST', `/api/agents/${encodeURIComponent(root.dataset.agent)}/deployments/${encodeURIComponent(button.dataset.run)}/stop`);
    refreshSections(['dep-header', 'dep-runs', 'dep-info']);
  },
};

document.addEventListener('click', async (event) => {
  const button = event.target.closest('[data-action]');
  if (!button || !actions[button.dataset.action]) return;
  event.preventDefault();
  button.disabled = true;
  flash('');
  try {
    await actions[button.dataset.action](button);
  } catch (error) {
    flash(error.message);
  } finally {
    button.disabled = false;
  }
});

document.addEventListener('DOMContentLoaded', () => {
  const run = document.getElementById('run-page');
  if (run) runPage(run);
  const runs = document.getElementById('runs');
  if (runs) runsList(runs);
  const deployments = document.getElementById('deployments');
  if (deployments) deploymentsPage(deployments);
});
