"""`facexpr serve --workers N`: the socket the workers share turns Nagle's algorithm off on every
connection (without it each answer on a kept-alive connection waited ~45 ms for the client's
delayed ACK; benchmarks/RESULTS-api.md)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from facexpr.serve.api.run import APP, as_tcp


def nagle_off_on_accepted(listener: socket.socket) -> bool:
    """Whether a connection asyncio accepts on LISTENER has TCP_NODELAY set (as uvicorn's server does)."""

    async def accept_one() -> bool:
        accepted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        try:
            return await asyncio.wait_for(accepted, 10)
        finally:
            writer.close()
            server.close()

    return asyncio.run(accept_one())


def workers_socket() -> socket.socket:
    return uvicorn.Config(APP, factory=True, host="127.0.0.1", port=0, workers=2).bind_socket()


def test_the_workers_socket_turns_nagle_off_on_every_connection():
    assert nagle_off_on_accepted(as_tcp(workers_socket()))
    # Why it is needed: the socket uvicorn binds for its workers leaves Nagle on (uvicorn #3149).
    # When this fails, a uvicorn upgrade fixed it and facexpr.serve.api.run.as_tcp can go.
    assert not nagle_off_on_accepted(workers_socket())


def test_two_workers_answer_over_one_kept_alive_connection(tiny_model_path, astronaut_bytes, tmp_path):
    import httpx

    from tests.apiserver import ApiServer

    env = {"FACEXPR_DATA_DIR": str(tmp_path / "data"), "FACEXPR_MODEL": str(tiny_model_path)}
    with ApiServer(env, log_path=tmp_path / "server.log", workers=2) as server, httpx.Client() as client:
        for _ in range(3):  # one connection, several answers
            response = client.post(server.url + "/v1/predictions", timeout=120,
                                   files=[("file", ("a.jpg", astronaut_bytes, "image/jpeg"))])
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["faces"]
