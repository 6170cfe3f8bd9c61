// Commands for the user's own names and this server's real SSH host and port: what the
// hand-built setup wrote by hand (a reconnecting launchd or systemd unit, autossh).
import { api, h, fill, items, snippet } from '../lib.js';

export async function render({ main, query }) {
  const [server, res] = await Promise.all([api('GET', '/server'), api('GET', '/reservations')]);
  const names = items(res);
  const pick = h('select', { id: 'c-name' },
    names.map((r) => h('option', { value: r.name, 'data-kind': r.kind, selected: r.name === query.get('name') }, `${r.name} (${r.kind})`)),
    h('option', { value: '', 'data-kind': 'http', selected: !query.get('name') && !names.length }, 'a random name (HTTP)'));
  const port = h('input', { id: 'c-port', type: 'number', min: 1, max: 65535, value: '8080', inputmode: 'numeric' });
  const out = h('div');
  main.append(
    h('h1', {}, 'Connect'),
    h('p', { class: 'muted' }, 'Plain OpenSSH, nothing to install. Your machine needs one of your ', h('a', { href: '/keys' }, 'SSH keys'), '.'),
    h('div', { class: 'fields card' },
      h('div', { class: 'field' }, h('label', { for: 'c-name' }, 'Name'), pick),
      h('div', { class: 'field' }, h('label', { for: 'c-port' }, 'Local port'), port, h('span', { class: 'hint' }, 'Where your service listens on your machine.'))),
    out);
  const draw = () => {
    const opt = pick.selectedOptions[0];
    const name = opt ? opt.value : '';
    const kind = opt ? opt.dataset.kind : 'http';
    const n = Number(port.value);
    const local = `localhost:${Number.isInteger(n) && n >= 1 && n <= 65535 ? n : 8080}`;
    fill(out, snippets(server, name, kind, local));
  };
  pick.addEventListener('change', draw);
  port.addEventListener('input', draw);
  draw();
}

/** `-R` spec: `chat:80:…`, `chat:443:…` (TLS passthrough), `tcp:20001:…`, or `0:…` (random). */
function spec(name, kind, local) {
  if (!name) return { remote: '0', local, label: 'random' };
  if (kind === 'tcp') return { remote: name, local, label: name.replace(':', '-') };
  return { remote: `${name}:${kind === 'tls' ? 443 : 80}`, local, label: name };
}

function snippets(server, name, kind, local) {
  const s = spec(name, kind, local);
  const host = server.ssh_host;
  const p = server.ssh_port;
  const user = server.ssh_user;
  const pflag = p === 22 ? [] : ['-p', String(p)];
  const keep = ['-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=3', '-o', 'ExitOnForwardFailure=yes'];
  const args = [...pflag, '-N', ...keep, '-R', `${s.remote}:${s.local}`, `${user}@${host}`];
  const unit = `warren-${s.label}`;
  const plistArgs = ['/usr/bin/ssh', ...args].map((a) => `    <string>${xml(a)}</string>`).join('\n');
  return [
    snippet('Command', ['ssh', ...args].join(' ')),
    snippet('~/.ssh/config', [
      `Host ${unit}`,
      `    HostName ${host}`,
      `    Port ${p}`,
      `    User ${user}`,
      `    RemoteForward ${s.remote} ${s.local}`,
      '    ServerAliveInterval 15',
      '    ServerAliveCountMax 3',
      '    ExitOnForwardFailure yes',
      '# then: ssh -N ' + unit,
    ].join('\n')),
    snippet(`systemd user unit: ~/.config/systemd/user/${unit}.service`, [
      '[Unit]',
      `Description=Warren tunnel ${name || '(random name)'}`,
      'After=network-online.target',
      'Wants=network-online.target',
      '',
      '[Service]',
      `ExecStart=/usr/bin/ssh ${args.join(' ')}`,
      'Restart=always',
      'RestartSec=5',
      '',
      '[Install]',
      'WantedBy=default.target',
      `# then: systemctl --user enable --now ${unit}; loginctl enable-linger "$USER"`,
    ].join('\n')),
    snippet(`launchd agent: ~/Library/LaunchAgents/org.warren.${s.label}.plist`, [
      '<?xml version="1.0" encoding="UTF-8"?>',
      '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
      '<plist version="1.0">',
      '<dict>',
      '  <key>Label</key>',
      `  <string>org.warren.${xml(s.label)}</string>`,
      '  <key>ProgramArguments</key>',
      '  <array>',
      plistArgs,
      '  </array>',
      '  <key>RunAtLoad</key>',
      '  <true/>',
      '  <key>KeepAlive</key>',
      '  <true/>',
      '  <key>ThrottleInterval</key>',
      '  <integer>10</integer>',
      '</dict>',
      '</plist>',
      `<!-- then: launchctl load -w ~/Library/LaunchAgents/org.warren.${xml(s.label)}.plist -->`,
    ].join('\n')),
    snippet('autossh', ['autossh', '-M', '0', ...args].join(' ')),
  ];
}

/** For the plist text (shown as text, copied as XML). */
const xml = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
