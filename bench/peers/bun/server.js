// Bun peer (Bun.serve's native WebSocket, uWebSockets underneath): same frames as the Node peer.
// Fan-out uses Bun's built-in topics (server.publish). PORT (default 9002), any path.
const port = Number(process.env.PORT || 9002);
const offsets = new Map();
let next = 0;

const server = Bun.serve({
  hostname: '127.0.0.1',
  port,
  fetch(req, server) {
    if (server.upgrade(req)) return;
    return new Response('websocket only', { status: 400 });
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      const connectionId = (++next).toString(16).padStart(32, '0');
      ws.send(JSON.stringify({ type: 'welcome', connectionId, protocolVersion: 1, heartbeatIntervalMs: 25000, serverTime: new Date().toISOString() }));
    },
    message(ws, data) {
      let m;
      try { m = JSON.parse(data); } catch { ws.send(JSON.stringify({ type: 'error', error: { code: 'bad_request', message: 'invalid JSON' } })); return; }
      switch (m.action) {
        case 'ping':
          ws.send(`{"type":"pong","ts":${Date.now()},"id":${m.id === undefined ? 'null' : JSON.stringify(m.id)}}`);
          break;
        case 'subscribe':
          ws.subscribe(m.channel);
          ws.send(JSON.stringify({ type: 'subscribed', channel: m.channel, offset: offsets.get(m.channel) || 0, epoch: 'bun', id: m.id }));
          break;
        case 'unsubscribe':
          ws.unsubscribe(m.channel);
          ws.send(JSON.stringify({ type: 'unsubscribed', channel: m.channel, id: m.id }));
          break;
        case 'publish': {
          const offset = (offsets.get(m.channel) || 0) + 1;
          offsets.set(m.channel, offset);
          server.publish(m.channel, JSON.stringify({ type: 'message', channel: m.channel, data: m.data, offset }));
          if (m.id !== undefined) ws.send(JSON.stringify({ type: 'published', id: m.id, channel: m.channel, offset }));
          break;
        }
        default:
          ws.send(JSON.stringify({ type: 'error', id: m.id, error: { code: 'unknown_action', message: 'unknown action' } }));
      }
    },
  },
});
console.log(`bun peer on 127.0.0.1:${server.port}`);
