// Node `ws` peer: the realtime frames of docs/protocol.md (welcome, ping→pong with the id,
// subscribe/unsubscribe, publish→message to every subscriber). PORT (default 9001), any path.
'use strict';
const path = require('path');
const { WebSocketServer } = require(path.join(__dirname, '..', '.deps', 'node_modules', 'ws'));

const port = Number(process.env.PORT || 9001);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, clientTracking: false, backlog: 4096 });
const channels = new Map(); // name -> Set<ws>
const offsets = new Map();
let next = 0;

function error(ws, id, code, message) {
  ws.send(JSON.stringify({ type: 'error', id, error: { code, message } }));
}

wss.on('connection', (ws) => {
  const connectionId = (++next).toString(16).padStart(32, '0');
  ws.send(JSON.stringify({ type: 'welcome', connectionId, protocolVersion: 1, heartbeatIntervalMs: 25000, serverTime: new Date().toISOString() }));
  const mine = new Set();
  ws.on('message', (data, isBinary) => {
    let m;
    try { m = JSON.parse(data); } catch { return error(ws, undefined, 'bad_request', 'invalid JSON'); }
    switch (m.action) {
      case 'ping':
        ws.send(`{"type":"pong","ts":${Date.now()},"id":${m.id === undefined ? 'null' : JSON.stringify(m.id)}}`);
        break;
      case 'subscribe': {
        let set = channels.get(m.channel);
        if (!set) { set = new Set(); channels.set(m.channel, set); }
        set.add(ws); mine.add(m.channel);
        ws.send(JSON.stringify({ type: 'subscribed', channel: m.channel, offset: offsets.get(m.channel) || 0, epoch: 'node', id: m.id }));
        break;
      }
      case 'unsubscribe':
        channels.get(m.channel)?.delete(ws); mine.delete(m.channel);
        ws.send(JSON.stringify({ type: 'unsubscribed', channel: m.channel, id: m.id }));
        break;
      case 'publish': {
        const offset = (offsets.get(m.channel) || 0) + 1;
        offsets.set(m.channel, offset);
        const frame = JSON.stringify({ type: 'message', channel: m.channel, data: m.data, offset });
        const set = channels.get(m.channel);
        if (set) for (const s of set) s.send(frame);
        if (m.id !== undefined) ws.send(JSON.stringify({ type: 'published', id: m.id, channel: m.channel, offset }));
        break;
      }
      default:
        error(ws, m.id, 'unknown_action', 'unknown action');
    }
  });
  ws.on('close', () => { for (const c of mine) channels.get(c)?.delete(ws); });
});
wss.on('listening', () => console.log(`node ws peer on 127.0.0.1:${port}`));
