import { api, h, fill, form, table, when, items, announce, confirmButton, button, copy } from '../lib.js';

export async function render({ main, me }) {
  const list = h('div');
  const fresh = h('div', { 'aria-live': 'polite' });
  const scopes = [['read', 'read: look only'], ['write', 'write: manage your things']];
  if (me.is_admin) scopes.push(['admin', 'admin: everything']);
  main.append(
    h('h1', {}, 'API tokens'),
    h('p', { class: 'muted' }, 'For scripts: ', h('code', {}, 'curl -H "Authorization: Bearer wrn_…" …/api/v1/tunnels'), '. ', h('a', { href: '/api/v1/openapi.json' }, 'The API’s OpenAPI document'), '.'),
    h('section', { class: 'card', 'aria-labelledby': 'new-token' },
      h('h2', { id: 'new-token' }, 'Create a token'),
      form({
        label: 'Create an API token',
        submit: 'Create token',
        fields: [
          { name: 'name', label: 'Name', required: true, placeholder: 'ci', hint: 'Unique among your tokens.' },
          { name: 'scope', label: 'Scope', type: 'select', value: 'write', options: scopes },
          { name: 'expires', label: 'Expires after', placeholder: '90d', hint: 'e.g. 30d, 12h; empty: never.' },
        ],
        onsubmit: async (v, f) => {
          const body = { name: v.name.trim(), scope: v.scope };
          if (v.expires.trim()) body.expires = v.expires.trim();
          const t = await api('POST', '/tokens', body);
          f.reset();
          fill(fresh, h('div', { class: 'secret' },
            h('p', {}, h('strong', {}, 'Copy the token now: it is shown once and stored only as a hash.')),
            h('p', {}, h('code', { class: 'new-token' }, t.token), ' ', button('Copy token', () => copy(t.token)))));
          await load();
        },
      }),
      fresh),
    h('h2', {}, 'Your tokens'), list);

  async function load() {
    const ts = items(await api('GET', '/tokens'));
    fill(list, table('Your API tokens', [{ label: 'Name' }, { label: 'Starts with', narrow: true }, { label: 'Scope' }, { label: 'Expires' }, { label: 'Last used' }, { label: 'Action' }],
      ts.map((t) => [t.name, h('code', {}, t.hint), t.scope, t.expires_at ? when(t.expires_at) : 'never', when(t.last_used_at),
        confirmButton('Revoke', 'Confirm revoke', async () => { await api('DELETE', '/tokens/' + t.id); announce(`Revoked ${t.name}.`); await load(); }, 'Revoke ' + t.name)]),
      'No tokens.'));
  }
  await load();
}
