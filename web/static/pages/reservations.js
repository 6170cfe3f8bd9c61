import { api, h, fill, form, table, when, link, items, announce, confirmButton, enc } from '../lib.js';

export async function render({ main }) {
  const list = h('div');
  main.append(
    h('h1', {}, 'Reservations'),
    h('p', { class: 'muted' }, 'A reserved name is yours alone: nobody else can bind it, and its access rules apply whenever you connect it.'),
    h('section', { class: 'card', 'aria-labelledby': 'new-res' },
      h('h2', { id: 'new-res' }, 'Reserve a name'),
      form({
        label: 'Reserve a name',
        submit: 'Reserve',
        fields: [
          { name: 'name', label: 'Name', required: true, placeholder: 'chat', hint: 'A DNS label (a-z, 0-9, -), or a port of the TCP range for kind tcp.' },
          { name: 'kind', label: 'Kind', type: 'select', value: 'http', options: [['http', 'HTTP(S), served by the broker'], ['tls', 'TLS passthrough (your certificate)'], ['tcp', 'Raw TCP port']] },
        ],
        onsubmit: async (v, f) => {
          const r = await api('POST', '/reservations', { name: v.name.trim(), kind: v.kind });
          f.reset();
          announce(`Reserved ${r.name}: ${r.url}`);
          await load();
        },
      })),
    h('h2', {}, 'Your names'), list);

  async function load() {
    const rs = items(await api('GET', '/reservations'));
    fill(list, table('Reserved names', [{ label: 'Name' }, { label: 'Kind' }, { label: 'URL' }, { label: 'State' }, { label: 'Reserved', narrow: true }, { label: 'Action' }],
      rs.map((r) => [
        h('a', { href: '/reservations/' + enc(r.name) }, r.name),
        r.kind,
        link(r.url),
        r.live ? h('span', { class: 'badge ok' }, 'live') : h('span', { class: 'badge muted' }, 'offline'),
        when(r.created_at),
        confirmButton('Release', 'Confirm release', async () => {
          await api('DELETE', '/reservations/' + enc(r.name));
          announce(`Released ${r.name}.`);
          await load();
        }, 'Release ' + r.name),
      ]), 'No reserved names yet. Reserve one above, or connect with ssh -R NAME:80:… (names are claimed on first use when the operator allows it).'));
  }
  await load();
}
