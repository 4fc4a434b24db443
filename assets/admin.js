// Easel's console: asks /admin/api/status every second with the admin token (kept for this tab
// only) and draws it; actions post to /admin/api/. Everything a player chose (names, rooms) is
// written as text, never as HTML.
const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'easel-admin-token';
const HISTORY = 120;
const history = [];
let previous = null;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, body) {
  const init = { headers: { authorization: `Bearer ${token()}` } };
  if (body !== undefined) {
    init.method = 'POST';
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`/admin/api/${path}`, init);
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin('That token is not this server\'s.');
    throw new Error('unauthorized');
  }
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  return response.json();
}

function showLogin(error) {
  $('console').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = error ?? '';
  document.body.dataset.state = 'login';
}

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function duration(seconds) {
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = Math.floor(seconds % 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${s} s` : `${s} s`;
}

function report(message, ok) {
  $('action-status').textContent = message;
  $('action-status').className = ok ? 'ok' : '';
}

async function act(path, body, what) {
  try {
    await api(path, body);
    report(`${what}: done`, true);
    await refresh();
  } catch (e) {
    if (e.message !== 'unauthorized') report(`${what} failed: ${e.message}`, false);
  }
}

// KB/s in and out of `room` since the previous status, or '…' for the first.
function roomRate(room, seconds) {
  const before = previous?.status.rooms.find((r) => r.name === room.name);
  if (!before || !seconds) return '…';
  const rate = (now, then) => ((now - then) / seconds / 1024).toFixed(1);
  return `${rate(room.bytes_in_total, before.bytes_in_total)} / ${rate(room.bytes_out_total, before.bytes_out_total)}`;
}

function renderRooms(rooms, seconds) {
  const body = $('rooms');
  body.replaceChildren();
  if (rooms.length === 0) {
    const empty = element('tr');
    empty.append(element('td', 'No room is open.', { colspan: '7' }));
    body.append(empty);
  }
  for (const room of rooms) {
    const row = element('tr', undefined, { 'data-room': room.name });
    row.append(element('td', room.name));
    const players = element('ul');
    for (const player of room.players) {
      const item = element('li', undefined, { 'data-player': String(player.id) });
      item.append(element('span', `${player.name} (#${player.id})`));
      const kick = element('button', 'Kick', { type: 'button', class: 'small danger' });
      kick.addEventListener('click', () => act(
        `rooms/${encodeURIComponent(room.name)}/players/${player.id}/kick`, { reason: 'removed by the server\'s host' },
        `kick ${player.name}`));
      item.append(kick);
      players.append(item);
    }
    const playersCell = element('td');
    playersCell.append(players);
    row.append(playersCell);
    row.append(element('td', `${room.board_strokes} strokes`));
    row.append(element('td', `${room.tick_p50_ms.toFixed(2)} / ${room.tick_p99_ms.toFixed(2)}`));
    row.append(element('td', String(room.missed_ticks)));
    row.append(element('td', roomRate(room, seconds)));
    const close = element('form');
    const message = element('input', undefined, { placeholder: 'Why it closes', maxlength: '500', required: '' });
    close.append(message, element('button', 'Close room', { type: 'submit', class: 'small danger' }));
    close.addEventListener('submit', (event) => {
      event.preventDefault();
      act(`rooms/${encodeURIComponent(room.name)}/close`, { message: message.value }, `close ${room.name}`);
    });
    const closeCell = element('td');
    closeCell.append(close);
    row.append(closeCell);
    body.append(row);
  }
}

// The cluster's nodes, when this server is one of them.
function renderCluster(cluster) {
  $('cluster').hidden = !cluster;
  if (!cluster) return;
  $('cluster-error').textContent = cluster.error ? `the cluster's database: ${cluster.error}` : '';
  const body = $('nodes');
  body.replaceChildren();
  for (const node of cluster.nodes ?? []) {
    const row = element('tr', undefined, { 'data-node': String(node.id) });
    row.append(element('td', node.this ? `#${node.id} (this one)` : `#${node.id}`));
    row.append(element('td', node.url));
    row.append(element('td', !node.alive ? 'gone' : node.draining ? 'draining' : 'alive'));
    row.append(element('td', String(node.rooms)));
    row.append(element('td', String(node.players)));
    body.append(row);
  }
}

function drawChart() {
  const canvas = $('chart');
  const context = canvas.getContext('2d');
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const series = [['players', '#1f5fd6'], ['kbOut', '#d97706']];
  for (const [key, colour] of series) {
    const top = Math.max(1, ...history.map((point) => point[key]));
    context.strokeStyle = colour;
    context.lineWidth = 2;
    context.beginPath();
    history.forEach((point, i) => {
      const x = (i / (HISTORY - 1)) * width;
      const y = height - 4 - (point[key] / top) * (height - 8);
      if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
    });
    context.stroke();
  }
}

async function refresh() {
  const status = await api('status');
  const now = performance.now();
  let cpu = '', traffic = '';
  if (previous) {
    const seconds = (now - previous.at) / 1000;
    cpu = `${Math.round(((status.cpu_s - previous.status.cpu_s) / seconds) * 100)} %`;
    const inRate = (status.bytes_in_total - previous.status.bytes_in_total) / seconds / 1024;
    const outRate = (status.bytes_out_total - previous.status.bytes_out_total) / seconds / 1024;
    traffic = `${inRate.toFixed(1)} / ${outRate.toFixed(1)} KB/s`;
    const players = status.rooms.reduce((sum, room) => sum + room.players.length, 0);
    history.push({ players, kbOut: outRate });
    if (history.length > HISTORY) history.shift();
  }
  renderRooms(status.rooms, previous ? (now - previous.at) / 1000 : 0);
  renderCluster(status.cluster);
  previous = { at: now, status };
  $('uptime').textContent = duration(status.uptime_s);
  $('cpu').textContent = cpu || '…';
  $('memory').textContent = `${(status.rss_bytes / 1048576).toFixed(1)} MB`;
  $('connections').textContent = `${status.connections.websocket} WebSocket, ${status.connections.webtransport} WebTransport`;
  $('traffic').textContent = traffic || '…';
  $('state').textContent = status.draining ? 'draining' : 'taking players';
  drawChart();
  document.body.dataset.state = 'console';
}

async function open() {
  $('login-error').textContent = '';
  $('login').hidden = true;
  $('console').hidden = false;
  try {
    await refresh();
  } catch (e) {
    if (e.message !== 'unauthorized') report(`cannot read the status: ${e.message}`, false);
  }
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  open();
});
$('broadcast').addEventListener('submit', (event) => {
  event.preventDefault();
  act('broadcast', { text: $('broadcast-text').value }, 'broadcast');
});
$('drain').addEventListener('click', () => {
  if (confirm('Drain: no new players, everyone is told, and the server stops once the rooms are empty. Go on?')) {
    act('drain', {}, 'drain');
  }
});
setInterval(() => { if (token() && !$('console').hidden) refresh().catch(() => {}); }, 1000);
if (token()) open(); else showLogin();
