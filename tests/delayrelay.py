"""
A TCP relay that holds every chunk for a delay with jitter (the tests' stand-in for netem, which this kernel lacks),
keeping each direction's bytes in order.  Run inside a namespace of the tests':

    python delayrelay.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS JITTER_MS

Prints "relaying" once it listens.  Standard library only; every connection and buffer ends with its peer.
"""

import asyncio
import random
import sys
import time


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, jitter: float) -> None:
    queue: asyncio.Queue = asyncio.Queue()

    async def release() -> None:
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # (this process's own timing: the delay it adds)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.ensure_future(release())
    last = 0.0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            # each chunk is due delay +- jitter from now, but never before the one ahead of it (TCP keeps order)
            last = max(last, time.monotonic() + delay + random.uniform(-jitter, jitter))
            queue.put_nowait((last, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((0.0, None))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def main(listen_host: str, listen_port: int, host: str, port: int, delay: float, jitter: float) -> None:
    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer, delay, jitter),
                             pipe(server_reader, client_writer, delay, jitter))

    server = await asyncio.start_server(relay, listen_host, listen_port)
    print("relaying", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    lh, lp, th, tp, d, j = sys.argv[1:7]
    asyncio.run(main(lh, int(lp), th, int(tp), float(d) / 1000, float(j) / 1000))
