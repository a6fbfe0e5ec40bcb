"""The benchmark's load generator sends a busy answer's request again, as phones do, and counts
its latency from when it was first due."""

from __future__ import annotations

import asyncio

from portner.benchmarks.loadgen import build_request, open_loop


def test_a_503_with_retry_after_is_sent_again_and_its_wait_counted() -> None:
    async def run() -> object:
        seen = 0

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal seen
            try:
                while await reader.readuntil(b"\r\n\r\n"):
                    seen += 1
                    if seen == 1:  # the first request: busy, come back in a second
                        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                                     b"Content-Length: 0\r\n\r\n")
                    else:
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass  # the client closed its connection
            finally:
                writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        try:
            request = build_request(url, "GET", "/x")
            return await open_loop(url, lambda i: request, rate=20, seconds=0.5, warmup=0, clients=2)
        finally:
            server.close()

    result = asyncio.run(run())
    assert (result.retried, result.errors, result.statuses) == (1, 0, {200: 10})  # type: ignore[attr-defined]
    assert max(result.latencies_ms) >= 1000  # type: ignore[attr-defined]
