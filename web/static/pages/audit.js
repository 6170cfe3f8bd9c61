import { api, h, table, when, items, enc } from '../lib.js';

export async function render({ main }) {
  const pages = h('div');
  const more = h('button', { type: 'button', class: 'secondary' }, 'Older events');
  main.append(h('h1', {}, 'Audit log'), h('p', { class: 'muted' }, 'Every change, by whom and through which door (console, API token, ssh, CLI); newest first.'), pages, more);
  let cursor = null;
  const load = async () => {
    more.disabled = true;
    const page = await api('GET', '/events?all=true&limit=100' + (cursor ? '&cursor=' + enc(cursor) : ''));
    pages.append(table(cursor ? 'Older audit events' : 'Audit events', [{ label: 'When' }, { label: 'Actor' }, { label: 'Action' }, { label: 'Subject' }, { label: 'Detail', narrow: true }],
      items(page).map((e) => [when(e.at), e.actor, h('code', {}, e.action), e.subject, e.detail]), cursor ? null : 'Nothing yet.'));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
  };
  more.addEventListener('click', load);
  await load();
}
