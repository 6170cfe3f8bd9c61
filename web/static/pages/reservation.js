// One reserved name: how to connect it, who may visit (basic auth, IP lists, share links),
// custom domains, certificate and DNS state, and its requests live.
import { api, h, fill, form, table, when, link, items, announce, button, confirmButton, copy, live, bytes, enc, message, cls } from '../lib.js';

export async function render({ main, params }) {
  const name = params[0];
  const base = '/reservations/' + enc(name);
  let res;
  try {
    res = await api('GET', base);
  } catch (e) {
    // Not reserved, but maybe a live random name of the caller's: its requests still show.
    const t = e.status === 404 ? items(await api('GET', '/tunnels').catch(() => [])).find((x) => x.name === name) : null;
    if (!t) {
      main.append(h('h1', {}, name), h('p', { class: 'error', role: 'alert' }, message(e)),
        h('p', {}, h('a', { href: '/reservations' }, 'Back to your reservations')));
      return;
    }
    return randomName(main, t);
  }
  const stateBadge = h('span', { class: 'badge' });
  const setLive = (on) => { stateBadge.className = 'badge ' + (on ? 'ok' : 'muted'); stateBadge.textContent = on ? 'live' : 'offline'; };
  setLive(res.live);
  main.append(
    h('h1', {}, res.name, ' ', stateBadge),
    h('dl', { class: 'facts card' },
      h('dt', {}, 'URL'), h('dd', {}, link(res.url), ' ', button('Copy', () => copy(res.url), { label: 'Copy the URL' })),
      h('dt', {}, 'Kind'), h('dd', {}, res.kind),
      h('dt', {}, 'Owner'), h('dd', {}, res.user),
      h('dt', {}, 'Reserved'), h('dd', {}, when(res.created_at))),
    h('p', {}, 'Connect it: ', h('code', {}, `ssh -R ${res.kind === 'tcp' ? res.name : res.name + (res.kind === 'tls' ? ':443' : ':80')}:localhost:8080 …`), ' — ', h('a', { href: '/connect?name=' + enc(res.name) }, 'full commands and a service that reconnects'), '.'));

  const rules = h('div');
  const shares = h('div');
  const domains = h('div');
  const health = h('div');
  const requests = h('div');
  if (res.kind === 'http') main.append(section('Access rules', rules), section('Share links', shares));
  else main.append(section('Access rules', h('p', { class: 'muted' }, 'Basic auth and share links need HTTP; IP lists apply to every kind.'), rules));
  main.append(section('Custom domains', domains), section('Certificate and DNS', health), section('Recent requests', requests));

  await Promise.all([
    drawRules(rules, shares, base, res),
    drawDomains(domains, base),
    drawHealth(health, res),
  ]);
  drawRequests(requests, res, base, setLive);
}

/** A live tunnel on a random name: its URL and requests; rules need a reservation. */
function randomName(main, t) {
  const requests = h('div');
  main.append(
    h('h1', {}, t.name, ' ', h('span', { class: 'badge ok' }, 'live')),
    h('dl', { class: 'facts card' },
      h('dt', {}, 'URL'), h('dd', {}, link(t.url), ' ', button('Copy', () => copy(t.url), { label: 'Copy the URL' })),
      h('dt', {}, 'Kind'), h('dd', {}, t.kind),
      h('dt', {}, 'Owner'), h('dd', {}, t.user)),
    h('p', {}, 'A random name: it is yours while the tunnel is up and for the grace period after. ',
      h('a', { href: '/reservations' }, 'Reserve a name'), ' to keep one and to set access rules on it.'),
    section('Recent requests', requests));
  drawRequests(requests, { name: t.name }, '/tunnels', () => {}, true);
}

function section(title, ...body) {
  const id = 'h-' + title.toLowerCase().replace(/[^a-z]+/g, '-');
  return h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id }, title), ...body);
}

async function drawRules(el, sharesEl, base, res) {
  const r = await api('GET', base + '/rules');
  const redraw = () => drawRules(el, sharesEl, base, res);
  const parts = [];
  if (res.kind === 'http') {
    parts.push(h('h3', {}, 'Basic auth'),
      table('Basic auth users', [{ label: 'User' }, { label: 'Hash' }, { label: 'Added', narrow: true }, { label: 'Action' }],
        r.basic_users.map((u) => [u.username, u.scheme, when(u.created_at),
          confirmButton('Remove', 'Confirm remove', async () => { await api('DELETE', `${base}/rules/auth/${enc(u.username)}`); announce(`Removed ${u.username}.`); await redraw(); }, 'Remove ' + u.username)]),
        'No basic auth: anyone with the URL can visit (unless an IP list or share link says otherwise).'),
      form({
        label: 'Add a basic auth user',
        submit: 'Add user',
        fields: [
          { name: 'username', label: 'User', required: true, autocomplete: 'off' },
          { name: 'password', label: 'Password', type: 'password', required: true, autocomplete: 'new-password' },
        ],
        onsubmit: async (v) => {
          await api('PUT', `${base}/rules/auth/${enc(v.username.trim())}`, { password: v.password });
          announce(`Visitors now need a password; ${v.username.trim()} added.`);
          await redraw();
        },
      }),
      h('details', {}, h('summary', {}, 'Import an htpasswd file'),
        form({
          label: 'Import an htpasswd file',
          submit: 'Import',
          fields: [{ name: 'htpasswd', label: 'htpasswd lines', type: 'textarea', required: true, wide: true, hint: 'bcrypt ($2y$, htpasswd -B) or argon2 lines, one user per line.' }],
          onsubmit: async (v) => { await api('POST', `${base}/rules/htpasswd`, { htpasswd: v.htpasswd }); announce('Imported.'); await redraw(); },
        })));
  }
  const ipRows = [...r.allow.map((c) => ['allow', c]), ...r.deny.map((c) => ['deny', c])];
  parts.push(h('h3', {}, 'IP lists'),
    table('IP rules', [{ label: 'Rule' }, { label: 'Addresses' }, { label: 'Action' }],
      ipRows.map(([a, c]) => [a, h('code', {}, c),
        confirmButton('Remove', 'Confirm remove', async () => { await api('DELETE', `${base}/rules/ip?cidr=${enc(c)}`); await redraw(); }, `Remove ${a} ${c}`)]),
      'No IP rules: every address may visit.'),
    form({
      label: 'Add an IP rule',
      submit: 'Add rule',
      fields: [
        { name: 'action', label: 'Rule', type: 'select', value: 'allow', options: [['allow', 'Allow only these'], ['deny', 'Deny these']] },
        { name: 'cidr', label: 'Address or network', required: true, placeholder: '203.0.113.0/24' },
      ],
      onsubmit: async (v) => { await api('POST', `${base}/rules/ip`, { action: v.action, cidr: v.cidr.trim() }); await redraw(); },
    }));
  if (r.basic_users.length || ipRows.length || r.shares.length) {
    parts.push(h('p', {}, confirmButton('Clear every rule', 'Confirm: clear every rule', async () => { await api('DELETE', `${base}/rules`); announce('Rules cleared.'); await redraw(); })));
  }
  fill(el, parts);
  if (res.kind === 'http') drawShares(sharesEl, base, r.shares, redraw);
}

function drawShares(el, base, shares, redraw, fresh = h('div', { 'aria-live': 'polite' })) {
  fill(el,
    h('p', { class: 'muted' }, 'A share link lets someone in without a password, until it expires or its uses run out.'),
    table('Share links', [{ label: 'Id', num: true }, { label: 'State' }, { label: 'Expires' }, { label: 'Uses left', num: true }, { label: 'By', narrow: true }, { label: 'Action' }],
      shares.map((s) => [String(s.id), s.state, when(s.expires_at), s.uses_left === null ? 'unlimited' : String(s.uses_left), s.created_by,
        s.state === 'live' ? confirmButton('Revoke', 'Confirm revoke', async () => { await api('DELETE', `${base}/shares/${s.id}`); announce('Share link revoked.'); await redraw(); }, `Revoke share ${s.id}`) : '']),
      'No share links.'),
    form({
      label: 'Create a share link',
      submit: 'Create link',
      fields: [
        { name: 'expires', label: 'Valid for', value: '24h', required: true, hint: '30m, 12h, 7d…' },
        { name: 'uses', label: 'Uses', type: 'number', min: 1, inputmode: 'numeric', hint: 'Empty: no limit.' },
      ],
      onsubmit: async (v) => {
        const body = { expires: v.expires.trim() };
        if (v.uses) body.uses = Number(v.uses);
        const c = await api('POST', `${base}/shares`, body);
        // The table is drawn again; the new link stays on screen below it, shown this once.
        drawShares(el, base, items(await api('GET', `${base}/shares`)), redraw, h('div', { class: 'secret', 'aria-live': 'polite' },
          h('p', {}, h('strong', {}, 'Copy this link now: it is shown once.')),
          h('p', {}, h('code', { class: 'share-url' }, c.url), ' ', button('Copy link', () => copy(c.url))),
          h('img', { class: 'qr', src: '/qr.svg?text=' + enc(c.url), alt: 'QR code of the share link', width: 208, height: 208 })));
      },
    }),
    fresh);
}

async function drawDomains(el, base) {
  const ds = items(await api('GET', base + '/domains'));
  const redraw = () => drawDomains(el, base);
  fill(el,
    ds.length ? ds.map((d) => h('div', { class: 'card' },
      h('h3', {}, d.domain, ' ', h('span', { class: 'badge ' + (d.serving ? 'ok' : 'warn') }, d.state)),
      d.serving ? null : h('p', {}, 'Add these records at your DNS provider, then check:'),
      table('DNS records for ' + d.domain, [{ label: 'Type' }, { label: 'Name' }, { label: 'Value' }, { label: '' }],
        d.records.map((rec) => [rec.type, h('code', {}, rec.name), h('code', {}, rec.value), button('Copy', () => copy(rec.value), { label: `Copy the ${rec.type} value` })])),
      d.last_error ? h('p', { class: 'error' }, 'Last check: ', d.last_error) : null,
      h('p', { class: 'muted' }, 'Last checked ', when(d.last_checked), d.verified_at ? [', verified ', when(d.verified_at)] : null),
      h('div', { class: 'actions' },
        button('Check now', async () => { const r = await api('POST', `${base}/domains/${enc(d.domain)}/verify`); announce(`${d.domain}: ${r.state}`); await redraw(); }, { label: 'Check ' + d.domain }),
        confirmButton('Detach', 'Confirm detach', async () => { await api('DELETE', `${base}/domains/${enc(d.domain)}`); await redraw(); }, 'Detach ' + d.domain))))
      : h('p', { class: 'muted' }, 'No custom domains. Attach one of yours (app.example.org) to serve this name there too.'),
    form({
      label: 'Attach a custom domain',
      submit: 'Attach',
      fields: [{ name: 'domain', label: 'Domain', required: true, placeholder: 'app.example.org' }],
      onsubmit: async (v) => { await api('POST', base + '/domains', { domain: v.domain.trim() }); await redraw(); },
    }));
}

async function drawHealth(el, res) {
  const [certs, dns] = await Promise.all([api('GET', '/certificates'), api('GET', '/dns')]);
  const host = res.url.replace(/^[a-z]+:\/\//, '').replace(/[:/].*$/, '');
  const mine = items(certs).filter((c) => c.name === host || c.name === res.name || (c.name.startsWith('*.') && host.endsWith(c.name.slice(1))));
  const d = items(dns).find((x) => x.name === res.name);
  fill(el,
    h('h3', {}, 'Certificate'),
    mine.length ? table('Certificates', [{ label: 'Name' }, { label: 'Valid until' }, { label: 'Issuer', narrow: true }, { label: 'Last error' }],
      mine.map((c) => [c.name, when(c.not_after), c.issuer || '—', c.last_error ? h('span', { class: 'error' }, c.last_error) : '—']))
      : h('p', { class: 'muted' }, res.kind === 'http' ? 'No certificate of its own (the operator’s certificate or plain HTTP serves it).' : 'Not applicable: the owner’s end holds the certificate or there is none.'),
    h('h3', {}, 'DNS'),
    d ? h('p', {}, h('span', { class: 'badge' }, d.state), ' ', h('code', {}, d.fqdn), d.since ? [' since ', when(d.since)] : null,
      d.last_error ? h('span', { class: 'error' }, ' — ', d.last_error) : null)
      : h('p', { class: 'muted' }, 'No DNS record state for this name.'));
}

function drawRequests(el, res, base, setLive, random = false) {
  const status = h('select', { id: 'req-status' }, [['', 'All'], ['2', '2xx'], ['3', '3xx'], ['4', '4xx'], ['5', '5xx']].map(([v, t]) => h('option', { value: v }, t)));
  const path = h('input', { id: 'req-path', type: 'search', placeholder: '/api', autocomplete: 'off', spellcheck: 'false' });
  const state = h('span', { class: 'live-dot off' }, 'Not live');
  const tbody = h('tbody');
  const detail = h('div', { 'aria-live': 'polite' });
  const cols = [{ label: 'Time' }, { label: 'Method' }, { label: 'Path' }, { label: 'Status' },
    { label: 'Duration', narrow: true }, { label: 'Out', narrow: true }, { label: 'Visitor', narrow: true }, { label: 'User agent', narrow: true }];
  const entries = [];
  const shows = (r) => (!status.value || String(r.status).startsWith(status.value)) && (!path.value || r.path.includes(path.value));
  const rowOf = (r) => {
    const tr = h('tr', { class: 'clickable', tabindex: 0, 'aria-label': `${r.method} ${r.path} ${r.status}, details` },
      [new Date(r.at_ms).toLocaleTimeString(), r.method, r.path, String(r.status), r.duration_ms + ' ms', bytes(r.bytes_out), r.visitor, r.user_agent]
        .map((c, i) => h('td', { class: cls(cols[i]) }, c)));
    const open = () => showDetail(detail, r);
    tr.addEventListener('click', open);
    tr.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); open(); } });
    tr.hidden = !shows(r);
    return tr;
  };
  const refilter = () => { for (const { r, tr } of entries) tr.hidden = !shows(r); };
  status.addEventListener('change', refilter);
  path.addEventListener('input', refilter);
  fill(el,
    h('div', { class: 'fields' },
      h('div', { class: 'field' }, h('label', { for: 'req-status' }, 'Status'), status),
      h('div', { class: 'field' }, h('label', { for: 'req-path' }, 'Path contains'), path)),
    h('div', { class: 'scroll', role: 'region', 'aria-label': 'Recent requests', tabindex: 0 },
      h('table', {}, h('caption', {}, 'Newest first ', state),
        h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col', class: cls(c) }, c.label)))), tbody)),
    detail);
  const add = (r) => {
    const tr = rowOf(r);
    entries.unshift({ r, tr });
    tbody.prepend(tr);
    while (entries.length > 500) entries.pop().tr.remove();
  };
  let src = null;
  const connect = async () => {
    if (src) return;
    try {
      const up = random
        ? items(await api('GET', '/tunnels')).some((x) => x.name === res.name)
        : (await api('GET', base)).live;
      setLive(up);
      if (!up) { setTimeout(connect, 3000); return; }
    } catch { setTimeout(connect, 5000); return; }
    src = true;
    live(`/api/v1/tunnels/${enc(res.name)}/requests/live`, {
      // Each connection replays the recent requests first: start the table afresh.
      open: () => { tbody.replaceChildren(); entries.length = 0; },
      request: add,
      lagged: (n) => announce(`${n} requests went by too fast to show.`),
      // Gone for good (the tunnel's log ended, or the session did): look again shortly.
      closed: () => { src = null; setLive(false); setTimeout(connect, 3000); },
    }, state);
  };
  connect();
}

function showDetail(el, r) {
  const rows = [
    ['Time', new Date(r.at_ms).toLocaleString()], ['Method', r.method], ['Path', r.path], ['Status', String(r.status)],
    ['Duration', r.duration_ms + ' ms'], ['Bytes in', bytes(r.bytes_in)], ['Bytes out', bytes(r.bytes_out)],
    ['Visitor', r.visitor], ['User agent', r.user_agent || '—'], ['Complete', r.complete ? 'yes' : 'no (a side went away first)'],
  ];
  const headers = r.headers || [];
  fill(el, h('div', { class: 'card request-detail' },
    h('h3', { tabindex: -1 }, 'Request detail'),
    h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    headers.length ? [h('h3', {}, 'Request headers'), h('p', { class: 'hint' }, 'Credentials and cookies are redacted by the broker.'),
      table('Request headers', [{ label: 'Header' }, { label: 'Value' }], headers.map(([k, v]) => [h('code', {}, k), h('code', {}, v)]))] : null));
  el.querySelector('h3').focus();
}
