"""Sandcastle's server: its own engines as a Ray Serve application (`sandcastle serve`).

`server.app` holds the deployment and `run_server`; `server.launch` starts and stops a local server
process for the tests and the benchmark. The client side is `engines.remote`; what travels between
them is `engines.wire`.
"""
