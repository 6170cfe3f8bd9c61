import { api, h, form, announce, button, toLogin, rate } from '../lib.js';

export async function render({ main, me }) {
  main.append(
    h('h1', {}, 'Account'),
    h('dl', { class: 'facts card' },
      h('dt', {}, 'User'), h('dd', {}, me.name),
      h('dt', {}, 'Role'), h('dd', {}, me.is_admin ? 'administrator' : 'tenant'),
      h('dt', {}, 'Quotas'), h('dd', {}, `${me.quotas.max_reservations} reservations, ${me.quotas.max_tunnels} live tunnels, ${me.quotas.max_visitor_connections} visitor connections per tunnel, ${rate(me.quotas.max_tunnel_bytes_per_sec)} per tunnel`)),
    h('section', { class: 'card', 'aria-labelledby': 'pw' },
      h('h2', { id: 'pw' }, 'Change your password'),
      form({
        label: 'Change your password',
        submit: 'Change password',
        fields: [
          { name: 'current_password', label: 'Current password', type: 'password', autocomplete: 'current-password' },
          { name: 'password', label: 'New password', type: 'password', required: true, autocomplete: 'new-password', hint: 'At least 10 characters.' },
        ],
        onsubmit: async (v) => {
          await api('PUT', '/me/password', { current_password: v.current_password || null, password: v.password });
          // Every session of the user ends, this one too.
          toLogin();
        },
      })),
    h('section', { class: 'card', 'aria-labelledby': 'out' },
      h('h2', { id: 'out' }, 'Sign out'),
      h('div', { class: 'actions' },
        button('Sign out', async () => { await api('DELETE', '/session'); location.assign('/login'); }, { class: 'secondary' }),
        button('Sign out everywhere', async () => { await api('POST', '/session/logout-all'); announce('Every session ended.'); location.assign('/login'); }, { class: 'danger' }))));
}
