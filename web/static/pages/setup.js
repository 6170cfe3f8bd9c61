import { api, h, form } from '../lib.js';

export async function render({ main }) {
  // The one-time token is in the fragment (#…): it never reaches a server log or a Referer.
  const token = decodeURIComponent(location.hash.slice(1));
  const box = h('div', { class: 'login card' }, h('h1', {}, 'First-run setup'));
  main.append(box);
  if (!token) {
    box.append(h('p', {}, 'Open the one-time link the broker printed when it started (it ends in ', h('code', {}, '/setup#…'), ').'));
    return;
  }
  box.append(
    h('p', {}, 'Choose the first administrator’s name and password. The link works once, within an hour of the broker’s start.'),
    form({
      label: 'Set up the first administrator',
      submit: 'Create the administrator',
      fields: [
        { name: 'name', label: 'User name', value: 'admin', required: true, autocomplete: 'username', wide: true },
        { name: 'password', label: 'Password', type: 'password', required: true, autocomplete: 'new-password', hint: 'At least 10 characters.', wide: true },
        { name: 'confirm', label: 'Password again', type: 'password', required: true, autocomplete: 'new-password', wide: true },
      ],
      onsubmit: async (v) => {
        if (v.password !== v.confirm) throw new Error('The two passwords differ.');
        await api('POST', '/setup', { token, name: v.name.trim(), password: v.password });
        history.replaceState(null, '', '/setup');
        location.assign('/');
      },
    }));
}
