// Approving a new device: its key's fingerprint and the forwards it waits for; on approval the
// key joins the signed-in user and the forwards come up in the waiting ssh session.
import { api, h, fill, when, message, button, enc } from '../lib.js';

export async function render({ main, params, me }) {
  const code = params[0];
  const box = h('div', { class: 'card' });
  main.append(h('h1', {}, 'Pair a device'), box);
  let p;
  try {
    p = await api('GET', '/pairings/' + enc(code));
  } catch (e) {
    fill(box, h('p', { class: 'error', role: 'alert' }, message(e)),
      h('p', {}, 'Codes work once and for 5 minutes. Connect again to get a new one.'));
    return;
  }
  fill(box,
    h('p', {}, 'A device asks to connect with a key the broker does not know.'),
    h('p', { class: 'warn' }, h('strong', {}, 'Approve only a device in front of you'), ', whose terminal shows this same code. Someone who sends you a pairing link is asking for access to your account.'),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Code'), h('dd', {}, h('code', {}, p.code)),
      h('dt', {}, 'Key'), h('dd', {}, h('code', { class: 'fingerprint' }, p.fingerprint), ' ', p.algorithm, p.comment ? [' ', p.comment] : null),
      h('dt', {}, 'Asks for'), h('dd', {}, p.forwards.length ? h('ul', {}, p.forwards.map((f) => h('li', {}, h('code', {}, f)))) : 'no forwards yet'),
      h('dt', {}, 'From'), h('dd', {}, p.peer),
      h('dt', {}, 'Expires'), h('dd', {}, when(p.expires_at))),
    h('div', { class: 'actions' },
      button(`Approve: add this key to ${me.name}`, async () => {
        const k = await api('POST', `/pairings/${enc(code)}/approve`);
        fill(box, h('p', { class: 'ok', role: 'status', tabindex: -1 }, `Approved. The key ${k.fingerprint} now belongs to ${me.name}; the waiting forwards are coming up in its ssh session.`),
          h('p', {}, h('a', { href: '/' }, 'See your live tunnels')));
        box.querySelector('p').focus();
      }, { class: 'primary' }),
      button('Reject', async () => {
        await api('POST', `/pairings/${enc(code)}/reject`);
        fill(box, h('p', { role: 'status', tabindex: -1 }, 'Rejected. The device was told and disconnected.'));
        box.querySelector('p').focus();
      }, { class: 'danger' })));
}
