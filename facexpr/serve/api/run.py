"""`facexpr serve`: uvicorn in one process, or several worker processes sharing one socket.

With several workers uvicorn binds the listening socket itself (`Config.bind_socket`) and leaves its
`proto` at 0; accepted connections inherit it, and asyncio only turns Nagle's algorithm off
(TCP_NODELAY) on sockets that say IPPROTO_TCP. So every answer on a kept-alive connection waited
for the client's delayed ACK: about 45 ms a request with `--workers 2` at one client, where one
worker took 13 ms (uvicorn issue #3149, open). Here the bound socket is wrapped again as TCP before
the workers get it.
"""

from __future__ import annotations

import socket

APP = "facexpr.serve.api:create_app"


def as_tcp(bound: socket.socket) -> socket.socket:
    """BOUND (a listening socket) as one that says IPPROTO_TCP, so asyncio sets TCP_NODELAY on every
    connection it accepts; a Unix socket is returned as it is."""
    if bound.family not in (socket.AF_INET, socket.AF_INET6) or bound.proto == socket.IPPROTO_TCP:
        return bound
    return socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())


def serve(host: str, port: int, workers: int, log_level: str) -> None:
    """Run the API until stopped; the app factory runs in each worker (each loads the model once)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if workers <= 1:
        uvicorn.run(APP, factory=True, host=host, port=port, log_level=log_level,
                    timeout_graceful_shutdown=10)
        return
    config = uvicorn.Config(APP, factory=True, host=host, port=port, workers=workers, log_level=log_level,
                            timeout_graceful_shutdown=10)
    try:
        Multiprocess(config, sockets=[as_tcp(config.bind_socket())]).run()
    except KeyboardInterrupt:
        pass
