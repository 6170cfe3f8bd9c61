// The console's building blocks. Everything on screen is made with h(): element, attributes,
// children as text nodes. No HTML string is ever parsed, so a tenant's or a visitor's text
// (names, key comments, paths, user agents) is shown as text, whatever it contains.

/** Makes an element. Attributes named on* taking a function become listeners. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  add(el, children);
  return el;
}

/** Only http(s) links become links; anything else (javascript:, data:) stays text. */
export function link(url, text) {
  return /^https?:\/\//i.test(url) ? h('a', { href: url, rel: 'noopener noreferrer' }, text ?? url) : h('span', {}, text ?? url);
}

let csrf = '';
export function setCsrf(token) { csrf = token; }

/** An error answered by the API, in its one shape. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** Calls /api/v1 with the session cookie, and the CSRF token on anything that changes state. */
export async function api(method, path, body) {
  const opts = { method, credentials: 'same-origin', headers: { accept: 'application/json' } };
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  if (method !== 'GET') opts.headers['x-csrf-token'] = csrf;
  let r;
  try {
    r = await fetch('/api/v1' + path, opts);
  } catch (e) {
    throw new ApiError(0, 'network', 'The broker cannot be reached; check your connection and try again.');
  }
  if (r.status === 204) return null;
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    const e = data && data.error;
    const err = new ApiError(r.status, e ? e.code : 'http', e ? e.message : `The broker answered ${r.status}.`, r.headers.get('retry-after'));
    if (r.status === 401 && !path.startsWith('/session')) toLogin();
    throw err;
  }
  return data;
}

/** The items of a list answer, whether a plain array or a page. */
export const items = (r) => (Array.isArray(r) ? r : (r && r.items) || []);

export function toLogin() {
  const here = location.pathname + location.search;
  location.assign('/login' + (here !== '/' ? '?next=' + encodeURIComponent(here) : ''));
}

/** Says something to everyone, screen readers included (the polite live region). */
export function announce(text, kind) {
  const s = document.getElementById('status');
  if (!s) return;
  s.className = 'status' + (kind ? ' ' + kind : '');
  s.textContent = text;
  clearTimeout(announce.timer);
  announce.timer = setTimeout(() => { s.textContent = ''; }, 8000);
}

/** Seconds since the Unix epoch → "3 min ago" / "in 2 h", with the exact time as a tooltip. */
export function when(secs) {
  if (secs === null || secs === undefined) return h('span', { class: 'muted' }, '—');
  const d = new Date(secs * 1000);
  return h('time', { datetime: d.toISOString(), title: d.toLocaleString() }, relative(secs));
}

export function relative(secs) {
  let s = Math.round(secs - Date.now() / 1000);
  const future = s > 0;
  s = Math.abs(s);
  const units = [[86400 * 365, 'y'], [86400, 'd'], [3600, 'h'], [60, 'min'], [1, 's']];
  if (s < 5) return 'just now';
  for (const [n, u] of units) {
    if (s >= n) {
      const v = Math.round(s / n);
      return future ? `in ${v} ${u}` : `${v} ${u} ago`;
    }
  }
  return 'just now';
}

export function bytes(n) {
  if (!n) return '0 B';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + ' ' + u[i];
}

/** A bandwidth quota in bytes per second; 0 is no limit. */
export function rate(n) {
  return n ? bytes(n) + '/s' : 'no bandwidth limit';
}

/** A table in a keyboard-scrollable region (for phones). cols: [{label, num?, narrow?}]. */
export function table(caption, cols, rows, empty) {
  if (!rows.length && empty) return h('p', { class: 'muted' }, empty);
  const head = h('tr', {}, cols.map((c) => h('th', { scope: 'col', class: cls(c) }, c.label)));
  const body = h('tbody', {}, rows.map((r) => (r instanceof Node ? r : row(cols, r))));
  return h('div', { class: 'scroll', role: 'region', 'aria-label': caption, tabindex: 0 },
    h('table', {}, h('caption', {}, caption), h('thead', {}, head), body));
}

export function row(cols, cells) {
  return h('tr', {}, cells.map((c, i) => h('td', { class: cls(cols[i] || {}) }, c)));
}

/** A column's cell class: `num` right-aligns, `narrow` hides it on a phone. */
export const cls = (c) => [c.num ? 'num' : '', c.narrow ? 'hide-narrow' : ''].join(' ').trim() || null;

let ids = 0;
const id = (name) => `f-${name}-${++ids}`;

/**
 * A form of labelled fields. fields: [{name, label, type, options, required, hint, value,
 * placeholder, autocomplete, wide}]. onsubmit(values, form) may throw an ApiError: its message
 * is shown in the form (role=alert) and the field it names is marked.
 */
export function form({ label, fields, submit, onsubmit, className }) {
  const error = h('p', { class: 'error', role: 'alert' });
  const inputs = {};
  const button = h('button', { type: 'submit' }, submit);
  const el = h('form', { 'aria-label': label, class: className, novalidate: false },
    h('div', { class: 'fields' }, fields.map((f) => field(f, inputs)), h('div', { class: 'actions' }, button)),
    error);
  el.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    for (const i of Object.values(inputs)) i.removeAttribute('aria-invalid');
    const values = {};
    for (const [k, i] of Object.entries(inputs)) values[k] = i.value;
    button.disabled = true;
    try {
      await onsubmit(values, el);
    } catch (e) {
      error.textContent = message(e);
      const bad = e && e.message && Object.keys(inputs).find((k) => e.message.startsWith(k + ':') || e.message.includes(`"${k}"`));
      if (bad) { inputs[bad].setAttribute('aria-invalid', 'true'); inputs[bad].focus(); }
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

function field(f, inputs) {
  const fid = id(f.name);
  const hintId = f.hint ? fid + '-hint' : null;
  const common = { id: fid, name: f.name, required: f.required, 'aria-describedby': hintId, autocomplete: f.autocomplete || 'off', placeholder: f.placeholder };
  let input;
  if (f.type === 'select') {
    input = h('select', common, f.options.map(([v, t]) => h('option', { value: v, selected: v === f.value }, t)));
  } else if (f.type === 'textarea') {
    input = h('textarea', { ...common, rows: f.rows || 4, spellcheck: 'false' });
    if (f.value) input.value = f.value;
  } else {
    input = h('input', { ...common, type: f.type || 'text', value: f.value, min: f.min, inputmode: f.inputmode, spellcheck: 'false' });
  }
  inputs[f.name] = input;
  return h('div', { class: 'field' + (f.wide ? ' wide' : '') },
    h('label', { for: fid }, f.label), input, f.hint ? h('span', { class: 'hint', id: hintId }, f.hint) : null);
}

export function message(e) {
  if (e instanceof ApiError) {
    if (e.status === 429 && e.retryAfter) return `${e.message} (try again in ${e.retryAfter} s)`;
    return e.message;
  }
  return String((e && e.message) || e);
}

/** A button that runs action(); errors are announced. */
export function button(text, action, opts = {}) {
  const b = h('button', { type: 'button', class: opts.class || 'small secondary', 'aria-label': opts.label }, text);
  b.addEventListener('click', async () => {
    b.disabled = true;
    try { await action(); } catch (e) { announce(message(e), 'error'); } finally { b.disabled = false; }
  });
  return b;
}

/** A destructive button that asks once more in place: "Release" → "Confirm release". */
export function confirmButton(text, confirmText, action, label) {
  const b = h('button', { type: 'button', class: 'small danger', 'aria-label': label }, text);
  let armed = false;
  let timer;
  b.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      b.textContent = confirmText;
      if (label) b.setAttribute('aria-label', confirmText + ': ' + label);
      timer = setTimeout(() => { armed = false; b.textContent = text; if (label) b.setAttribute('aria-label', label); }, 5000);
      return;
    }
    clearTimeout(timer);
    b.disabled = true;
    try {
      await action();
    } catch (e) {
      // Failed: back to asking twice.
      announce(message(e), 'error');
      armed = false;
      b.textContent = text;
      if (label) b.setAttribute('aria-label', label);
      b.disabled = false;
    }
  });
  return b;
}

/** Copies text to the clipboard (with a fallback where the Clipboard API is not allowed). */
export async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const t = h('textarea', { readonly: true, 'aria-hidden': 'true', style: null });
    t.value = text;
    t.className = 'skip';
    document.body.append(t);
    t.select();
    document.execCommand('copy');
    t.remove();
  }
  announce('Copied to the clipboard.');
}

/** A block of text to copy: a labelled <pre> and its copy button. */
export function snippet(title, text) {
  const pid = id('snippet');
  return h('div', { class: 'snippet' },
    h('div', { class: 'actions' }, h('h3', { id: pid }, title),
      button('Copy', () => copy(text), { label: 'Copy: ' + title })),
    h('pre', { 'aria-labelledby': pid, tabindex: 0 }, text));
}

/**
 * A live Server-Sent Events view: calls handlers[event](data) for each event and
 * handlers.open() on each (re)connection (streams replay their backlog then); shows its state
 * in `indicator`. A stream the browser gave up on (an error answer: signed out, or gone) is
 * handed to handlers.closed() if given; else the session is checked: signed out goes to the
 * sign-in page, anything else is retried.
 */
export function live(url, handlers, indicator) {
  const set = (on, text) => {
    if (!indicator) return;
    indicator.className = 'live-dot' + (on ? '' : ' off');
    indicator.textContent = text;
  };
  let src;
  const connect = () => {
    src = new EventSource(url, { withCredentials: true });
    src.onopen = () => { set(true, 'Live'); if (handlers.open) handlers.open(); };
    src.onerror = () => {
      if (src.readyState !== EventSource.CLOSED) return set(false, 'Reconnecting…');
      set(false, 'Not live');
      if (handlers.closed) return handlers.closed();
      api('GET', '/session').then(() => setTimeout(connect, 3000), (e) => (e.status === 401 ? toLogin() : setTimeout(connect, 5000)));
    };
    for (const [ev, fn] of Object.entries(handlers)) {
      if (ev === 'open' || ev === 'closed') continue;
      src.addEventListener(ev, (m) => {
        let data;
        try { data = JSON.parse(m.data); } catch { data = m.data; }
        fn(data);
      });
    }
  };
  connect();
  addEventListener('pagehide', () => src.close());
}

export const enc = encodeURIComponent;
