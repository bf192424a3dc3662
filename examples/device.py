#!/usr/bin/env python3
"""A minimal waygate device: registers on the gateway, then answers every tool call.

Usage: python3 examples/device.py device.json
where device.json is the body returned by POST /api/gateway/devices.
Needs `pip install websockets`.
"""
import asyncio
import json
import sys

import websockets


async def main(path: str) -> None:
    reg = json.load(open(path))
    async with websockets.connect(reg["wsEndpoint"]) as ws:
        welcome = json.loads(await ws.recv())
        print("welcome:", welcome["connectionId"], flush=True)
        await ws.send(json.dumps({
            "type": "register",
            "deviceId": reg["deviceId"],
            "sessionToken": reg["sessionToken"],
            "protocolVersion": 1,
        }))
        ack = json.loads(await ws.recv())
        if ack.get("type") != "ack":
            sys.exit(f"registration refused: {ack}")
        print("registered, session", ack["sessionId"], flush=True)
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("type") != "tool_call":
                continue
            print("tool_call", msg["tool"], json.dumps(msg["args"]), "deadline", msg["deadline"], flush=True)
            if msg["tool"] == "fail":
                reply = {"ok": False, "error": {"code": "demo_failure", "message": "asked to fail"}}
            else:
                reply = {"ok": True, "result": {"tool": msg["tool"], "echo": msg["args"]}}
            await ws.send(json.dumps({"type": "tool_result", "callId": msg["callId"], **reply}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "device.json"))
