"""Python `websockets` peer (asyncio implementation): same frames as the Node peer.

PORT (default 9003), any path. Fan-out with websockets.broadcast (no per-subscriber await).
"""
import asyncio
import itertools
import functools
import json
import os
import time
from datetime import datetime, timezone

from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed

dumps = functools.partial(json.dumps, separators=(",", ":"))

CHANNELS: dict[str, set] = {}
OFFSETS: dict[str, int] = {}
IDS = itertools.count(1)


async def handler(ws):
    cid = format(next(IDS), "032x")
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    await ws.send(dumps({"type": "welcome", "connectionId": cid, "protocolVersion": 1,
                              "heartbeatIntervalMs": 25000, "serverTime": now}))
    mine = set()
    try:
        async for raw in ws:
            try:
                m = json.loads(raw)
            except ValueError:
                await ws.send('{"type":"error","error":{"code":"bad_request","message":"invalid JSON"}}')
                continue
            action = m.get("action")
            if action == "ping":
                await ws.send('{"type":"pong","ts":%d,"id":%s}' % (time.time() * 1000, dumps(m.get("id"))))
            elif action == "subscribe":
                ch = m["channel"]
                CHANNELS.setdefault(ch, set()).add(ws)
                mine.add(ch)
                await ws.send(dumps({"type": "subscribed", "channel": ch, "offset": OFFSETS.get(ch, 0),
                                          "epoch": "python", "id": m.get("id")}))
            elif action == "unsubscribe":
                ch = m["channel"]
                CHANNELS.get(ch, set()).discard(ws)
                mine.discard(ch)
                await ws.send(dumps({"type": "unsubscribed", "channel": ch, "id": m.get("id")}))
            elif action == "publish":
                ch = m["channel"]
                offset = OFFSETS.get(ch, 0) + 1
                OFFSETS[ch] = offset
                frame = dumps({"type": "message", "channel": ch, "data": m.get("data"), "offset": offset})
                broadcast(CHANNELS.get(ch, ()), frame)
                if "id" in m:
                    await ws.send(dumps({"type": "published", "id": m["id"], "channel": ch, "offset": offset}))
            else:
                await ws.send(dumps({"type": "error", "id": m.get("id"),
                                          "error": {"code": "unknown_action", "message": "unknown action"}}))
    except ConnectionClosed:
        pass
    finally:
        for ch in mine:
            CHANNELS.get(ch, set()).discard(ws)


async def main():
    port = int(os.environ.get("PORT", "9003"))
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=64, backlog=4096):
        print(f"python websockets peer on 127.0.0.1:{port}", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
