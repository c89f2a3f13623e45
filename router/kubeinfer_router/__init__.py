"""kubeinfer-router: the data plane in front of an InferenceService's serving pods.

One job per module. The pure core, with no I/O, no asyncio and no clock of its own (callers
pass `now`): `config` (the file and flag schema), `picking` (endpoint state and the
least-expected-wait choice), `splitting` (canary weights), `holding` (the held-request
accounting at zero replicas), `exposition` (reading a pod's Prometheus text) and `inventory`
(turning Pods or EndpointSlices into endpoint specs). The canary verdict is the operator's
(`kubeinfer.core.analysis`): the router measures, it decides. The thin I/O around it:
`table` (the live endpoint set the proxy reads), `discovery` (static list, Pod watch,
EndpointSlice watch), `scraping` (queue depth and readiness every ~250 ms), `waking` (the
scale 0 -> 1 hooks), `telemetry` (the router's own /metrics), `proxy` (the aiohttp
server and client), `reloading` (a changed configuration, from the ConfigMap watch or the
mounted file, applied live) and `cli` (flags, start-up, shutdown).

It must not import `kubeinfer` (the operator) or `kubeinfer_onnx` (the ONNX server): it is
installed and shipped on its own.
"""

import importlib.metadata

__version__ = importlib.metadata.version("kubeinfer-router")
