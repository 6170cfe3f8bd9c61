import { api, h, form, setCsrf } from '../lib.js';

/** Where to go after signing in: only a page of this console, never another site (the URL
 * parser decides, so `/\\evil.example` and a tab after the slash cannot slip through). */
function next(query) {
  try {
    const u = new URL(query.get('next') || '/', location.origin);
    return u.origin === location.origin ? u.pathname + u.search + u.hash : '/';
  } catch {
    return '/';
  }
}

export async function render({ main, query }) {
  try {
    await api('GET', '/session');
    location.replace(next(query));
    return;
  } catch { /* not signed in: show the form */ }
  main.append(h('div', { class: 'login card' },
    h('h1', {}, 'Sign in'),
    form({
      label: 'Sign in',
      submit: 'Sign in',
      fields: [
        { name: 'name', label: 'User name', required: true, autocomplete: 'username', wide: true },
        { name: 'password', label: 'Password', type: 'password', required: true, autocomplete: 'current-password', wide: true },
      ],
      onsubmit: async (v) => {
        const s = await api('POST', '/session', { name: v.name.trim(), password: v.password });
        setCsrf(s.csrf_token);
        location.assign(next(query));
      },
    }),
    h('p', { class: 'hint' }, 'No password yet? The operator can set one with ', h('code', {}, 'broker user passwd NAME'), '.')));
}
