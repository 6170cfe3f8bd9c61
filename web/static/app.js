// Picks the page the path names, checks the session, draws the navigation and hands over.
import { api, h, fill, setCsrf, toLogin, message, ApiError } from './lib.js';

const ROUTES = [
  [/^\/$/, 'dashboard', 'Live tunnels'],
  [/^\/login$/, 'login', 'Sign in', { open: true }],
  [/^\/setup$/, 'setup', 'First-run setup', { open: true }],
  [/^\/reservations$/, 'reservations', 'Reservations'],
  [/^\/reservations\/([^/]+)$/, 'reservation', 'Reservation'],
  [/^\/keys$/, 'keys', 'SSH keys'],
  [/^\/tokens$/, 'tokens', 'API tokens'],
  [/^\/connect$/, 'connect', 'Connect'],
  [/^\/account$/, 'account', 'Account'],
  [/^\/admin\/users$/, 'users', 'Users', { admin: true }],
  [/^\/admin\/tunnels$/, 'dashboard', 'All live tunnels', { admin: true, all: true }],
  [/^\/admin\/audit$/, 'audit', 'Audit log', { admin: true }],
  [/^\/admin\/status$/, 'status', 'Certificates and DNS', { admin: true }],
  [/^\/pair\/([^/]+)$/, 'pair', 'Pair a device'],
];

const NAV = [
  ['/', 'Tunnels'], ['/reservations', 'Reservations'], ['/keys', 'Keys'], ['/tokens', 'Tokens'],
  ['/connect', 'Connect'], ['/account', 'Account'],
];
const ADMIN_NAV = [['/admin/users', 'Users'], ['/admin/tunnels', 'All tunnels'], ['/admin/audit', 'Audit'], ['/admin/status', 'Certificates & DNS']];

function nav(session) {
  const here = location.pathname;
  const item = ([href, text]) => h('li', {}, h('a', { href, 'aria-current': href === here || (href !== '/' && here.startsWith(href + '/')) ? 'page' : null }, text));
  const list = [...NAV, ...(session.user.is_admin ? ADMIN_NAV : [])].map(item);
  list.push(h('li', { class: 'who' }, h('span', { class: 'muted' }, 'Signed in as ', h('strong', {}, session.user.name))));
  fill(document.getElementById('nav'), h('ul', {}, list));
}

async function start() {
  const main = document.getElementById('main');
  const path = location.pathname;
  const route = ROUTES.find(([re]) => re.test(path));
  if (!route) {
    fill(main, h('h1', {}, 'Not found'), h('p', {}, 'No console page here. ', h('a', { href: '/' }, 'Go to the dashboard'), '.'));
    return;
  }
  const [re, page, title, opts = {}] = route;
  let params;
  try {
    params = (path.match(re) || []).slice(1).map(decodeURIComponent);
  } catch {
    fill(main, h('h1', {}, 'Not found'), h('p', {}, 'This address is malformed. ', h('a', { href: '/' }, 'Go to the dashboard'), '.'));
    return;
  }
  document.title = `${title} · Warren`;
  let session = null;
  if (!opts.open) {
    try {
      session = await api('GET', '/session');
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return toLogin();
      fill(main, h('h1', {}, title), h('p', { class: 'error', role: 'alert' }, message(e)));
      return;
    }
    setCsrf(session.csrf_token);
    nav(session);
    if (opts.admin && !session.user.is_admin) {
      fill(main, h('h1', {}, title), h('p', {}, 'This page is for administrators.'));
      return;
    }
  } else {
    fill(document.getElementById('nav'));
  }
  const mod = await import(`./pages/${page}.js`);
  fill(main);
  try {
    await mod.render({ main, session, me: session && session.user, params, title, all: !!opts.all, query: new URLSearchParams(location.search) });
  } catch (e) {
    main.append(h('p', { class: 'error', role: 'alert' }, message(e)));
  }
}

start();
