// Live tunnels, updated in place from /api/v1/live/tunnels (Server-Sent Events): rows are kept
// by name and only changed cells are rewritten, so a thousand tunnels update without
// re-rendering the table and a focused button keeps its focus.
import { api, h, fill, live, link, bytes, relative, announce, button, enc, cls } from '../lib.js';

const COLS = (all) => [
  { label: 'Name' }, { label: 'URL' }, { label: 'Kind', narrow: true }, ...(all ? [{ label: 'Owner' }] : []),
  { label: 'Up since', narrow: true }, { label: 'Requests', num: true }, { label: 'In', num: true, narrow: true },
  { label: 'Out', num: true, narrow: true }, { label: 'Visitors', num: true }, { label: 'Action' },
];

export async function render({ main, all, title }) {
  const state = h('span', { class: 'live-dot off' }, 'Connecting…');
  const count = h('p', { class: 'muted', 'aria-live': 'off' });
  const tbody = h('tbody');
  const empty = h('div', { class: 'card', hidden: true },
    h('p', {}, 'No tunnel is live right now.'),
    h('p', {}, 'Start one from your machine: ', h('code', {}, 'ssh -R 0:localhost:8080 tunnel@…'), ' — ', h('a', { href: '/connect' }, 'see the exact command for this server'), '.'));
  const cols = COLS(all);
  const wrap = h('div', { class: 'scroll', role: 'region', 'aria-label': title, tabindex: 0 },
    h('table', {}, h('caption', {}, title, ' ', state),
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col', class: cls(c) }, c.label)))),
      tbody));
  main.append(h('h1', {}, title), count, wrap, empty);

  const rows = new Map();
  const update = (tunnels) => {
    const seen = new Set();
    tunnels.sort((a, b) => a.name.localeCompare(b.name));
    let prev = null;
    for (const t of tunnels) {
      seen.add(t.name);
      let r = rows.get(t.name);
      if (!r) {
        r = makeRow(t, all, cols);
        rows.set(t.name, r);
      }
      setCells(r, t, all);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== r.tr) tbody.insertBefore(r.tr, want);
      prev = r.tr;
    }
    for (const [name, r] of rows) {
      if (!seen.has(name)) { r.tr.remove(); rows.delete(name); }
    }
    wrap.hidden = tunnels.length === 0;
    empty.hidden = tunnels.length !== 0;
    count.textContent = tunnels.length === 1 ? '1 live tunnel' : `${tunnels.length} live tunnels`;
  };
  live('/api/v1/live/tunnels' + (all ? '?all=true' : ''), { tunnels: update }, state);
  // Relative times move on between updates too.
  setInterval(() => { for (const r of rows.values()) r.since.textContent = relative(r.sinceSecs); }, 15000);
}

function makeRow(t, all, cols) {
  const td = (i) => h('td', { class: cls(cols[i]) });
  const cells = cols.map((_, i) => td(i));
  let i = 0;
  const r = { tr: h('tr', { 'data-name': t.name }, cells), sinceSecs: t.since };
  fill(cells[i++], t.name.startsWith('tcp:') ? t.name : h('a', { href: '/reservations/' + enc(t.name) }, t.name));
  fill(cells[i++], link(t.url));
  // Held by a session on another node of the cluster: said beside the kind.
  cells[i++].textContent = t.node ? `${t.kind} · node ${t.node}` : t.kind;
  if (all) cells[i++].textContent = t.user;
  r.since = cells[i++];
  r.requests = cells[i++];
  r.in = cells[i++];
  r.out = cells[i++];
  r.visitors = cells[i++];
  fill(cells[i++], button('Disconnect', async () => {
    await api('DELETE', '/tunnels/' + enc(t.name));
    announce(`Disconnected ${t.name}; its owner was told.`);
  }, { label: 'Disconnect ' + t.name }));
  return r;
}

function setCells(r, t) {
  r.sinceSecs = t.since;
  const set = (el, v) => { if (el.textContent !== v) el.textContent = v; };
  set(r.since, relative(t.since));
  set(r.requests, String(t.requests));
  set(r.in, bytes(t.bytes_in));
  set(r.out, bytes(t.bytes_out));
  set(r.visitors, String(t.visitor_connections));
}
