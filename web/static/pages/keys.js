import { api, h, fill, form, table, when, items, announce, confirmButton, enc } from '../lib.js';

export async function render({ main }) {
  const list = h('div');
  main.append(
    h('h1', {}, 'SSH keys'),
    h('p', { class: 'muted' }, 'Any of these keys may open tunnels as you: ', h('code', {}, 'ssh -R …'), '.'),
    h('section', { class: 'card', 'aria-labelledby': 'add-key' },
      h('h2', { id: 'add-key' }, 'Add a key'),
      form({
        label: 'Add an SSH key',
        submit: 'Add key',
        fields: [{ name: 'public_key', label: 'Public key', type: 'textarea', rows: 3, required: true, wide: true,
          placeholder: 'ssh-ed25519 AAAAC3Nza… you@laptop', hint: 'One line of your .pub file, e.g. the output of cat ~/.ssh/id_ed25519.pub' }],
        onsubmit: async (v, f) => {
          const k = await api('POST', '/keys', { public_key: v.public_key.trim() });
          f.reset();
          announce(`Added ${k.fingerprint}.`);
          await load();
        },
      })),
    h('h2', {}, 'Your keys'), list);

  async function load() {
    const keys = items(await api('GET', '/keys'));
    fill(list, table('Your SSH keys', [{ label: 'Fingerprint' }, { label: 'Type', narrow: true }, { label: 'Comment' }, { label: 'Added', narrow: true }, { label: 'Action' }],
      keys.map((k) => [h('code', {}, k.fingerprint), k.algorithm, k.comment, when(k.created_at),
        confirmButton('Remove', 'Confirm remove', async () => {
          await api('DELETE', '/keys/' + enc(k.fingerprint));
          announce('Key removed; its sessions were closed.');
          await load();
        }, 'Remove key ' + (k.comment || k.fingerprint))]),
      'No keys yet: add the public key of each machine that connects tunnels.'));
  }
  await load();
}
