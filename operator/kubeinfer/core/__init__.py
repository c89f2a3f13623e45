"""The pure core: data and decisions with no I/O, no kopf, no kubernetes client, no asyncio.

Everything here takes its inputs (including the current time) as arguments and returns values.
The engines and clients above it read clocks, talk to the API and scrape pods.
"""
