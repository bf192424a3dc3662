#!/usr/bin/env python3
"""Seed 002's test client, unchanged except for the URI: it prints the welcome and the pong.

Usage: python3 examples/seed002_client.py [ws://127.0.0.1:8080/ws]   (pip install websockets)
"""
import asyncio
import json
import sys

import websockets

uri = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8080/ws"


async def test():
    async with websockets.connect(uri) as ws:
        # Wait for welcome message
        msg = await ws.recv()
        print(f"Connected: {msg}")

        # Send ping
        await ws.send(json.dumps({"action": "ping"}))
        response = await ws.recv()
        print(f"Pong: {response}")

asyncio.run(test())
