import { api, h, fill, form, table, when, items, announce, button, enc, rate } from '../lib.js';

export async function render({ main }) {
  const list = h('div');
  main.append(
    h('h1', {}, 'Users'),
    h('section', { class: 'card', 'aria-labelledby': 'new-user' },
      h('h2', { id: 'new-user' }, 'Create a user'),
      form({
        label: 'Create a user',
        submit: 'Create user',
        fields: [
          { name: 'name', label: 'Name', required: true, hint: 'Lowercase letters, digits, . _ -' },
          { name: 'password', label: 'Console password', type: 'password', autocomplete: 'new-password', hint: 'Optional; at least 10 characters. Without one: SSH keys and tokens only.' },
          { name: 'role', label: 'Role', type: 'select', value: 'tenant', options: [['tenant', 'Tenant'], ['admin', 'Administrator']] },
        ],
        onsubmit: async (v, f) => {
          const body = { name: v.name.trim(), is_admin: v.role === 'admin' };
          if (v.password) body.password = v.password;
          const u = await api('POST', '/users', body);
          f.reset();
          announce(`Created ${u.name}.`);
          await load();
        },
      })),
    h('h2', {}, 'Everyone'), list);

  async function load() {
    const users = items(await api('GET', '/users'));
    fill(list, table('Users', [{ label: 'Name' }, { label: 'Role' }, { label: 'State' }, { label: 'Quotas', narrow: true }, { label: 'Created', narrow: true }, { label: 'Actions' }],
      users.map((u) => [
        u.name,
        u.is_admin ? 'admin' : 'tenant',
        u.disabled ? h('span', { class: 'badge error' }, 'disabled') : h('span', { class: 'badge ok' }, 'active'),
        `${u.quotas.max_reservations} names · ${u.quotas.max_tunnels} tunnels · ${u.quotas.max_visitor_connections} visitors · ${rate(u.quotas.max_tunnel_bytes_per_sec)}`,
        when(u.created_at),
        h('div', {},
          h('div', { class: 'actions' },
            u.disabled
              ? button('Enable', async () => { await api('POST', `/users/${enc(u.name)}/enable`); announce(`Enabled ${u.name}.`); await load(); }, { label: 'Enable ' + u.name })
              : button('Disable', async () => { await api('POST', `/users/${enc(u.name)}/disable`); announce(`Disabled ${u.name}; their tunnels were dropped.`); await load(); }, { label: 'Disable ' + u.name, class: 'small danger' })),
          h('details', {}, h('summary', {}, 'Quotas and password'),
            form({
              label: 'Quotas of ' + u.name,
              submit: 'Set quotas',
              fields: [
                { name: 'max_reservations', label: 'Reservations', type: 'number', min: 0, value: String(u.quotas.max_reservations) },
                { name: 'max_tunnels', label: 'Live tunnels', type: 'number', min: 0, value: String(u.quotas.max_tunnels) },
                { name: 'max_visitor_connections', label: 'Visitors per tunnel', type: 'number', min: 0, value: String(u.quotas.max_visitor_connections) },
                { name: 'max_tunnel_bytes_per_sec', label: 'Bytes per second per tunnel (0: no limit)', type: 'number', min: 0, value: String(u.quotas.max_tunnel_bytes_per_sec) },
              ],
              onsubmit: async (v) => {
                const n = (x) => (x === '' ? null : Number(x));
                await api('PUT', `/users/${enc(u.name)}/quotas`, { max_reservations: n(v.max_reservations), max_tunnels: n(v.max_tunnels), max_visitor_connections: n(v.max_visitor_connections), max_tunnel_bytes_per_sec: n(v.max_tunnel_bytes_per_sec) });
                announce(`Quotas of ${u.name} set.`);
                await load();
              },
            }),
            form({
              label: 'Reset the password of ' + u.name,
              submit: 'Reset password',
              fields: [{ name: 'password', label: 'New password', type: 'password', required: true, autocomplete: 'new-password' }],
              onsubmit: async (v, f) => { await api('PUT', `/users/${enc(u.name)}/password`, { password: v.password }); f.reset(); announce(`Password of ${u.name} reset; their sessions ended.`); },
            }))),
      ])));
  }
  await load();
}
