import { api, h, table, when, items } from '../lib.js';

export async function render({ main }) {
  const [certs, dns] = await Promise.all([api('GET', '/certificates?all=true'), api('GET', '/dns?all=true')]);
  main.append(
    h('h1', {}, 'Certificates and DNS'),
    h('h2', {}, 'Certificates'),
    table('Certificates', [{ label: 'Name' }, { label: 'Valid until' }, { label: 'Issuer', narrow: true }, { label: 'Next attempt', narrow: true }, { label: 'Last error' }],
      items(certs).map((c) => [c.name, when(c.not_after), c.issuer || '—', when(c.next_attempt), c.last_error ? h('span', { class: 'error' }, c.last_error) : '—']),
      'No certificates: none are configured, or none is issued yet.'),
    h('h2', {}, 'DNS records'),
    table('DNS records', [{ label: 'Record' }, { label: 'State' }, { label: 'Since' }, { label: 'Last error' }],
      items(dns).map((d) => [h('code', {}, d.fqdn), d.state, when(d.since), d.last_error ? h('span', { class: 'error' }, d.last_error) : '—']),
      'No names.'));
}
