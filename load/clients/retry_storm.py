"""A client unlike the load driver's: Python's asyncio, on the same cores as the server.

Open loop: jobs arrive (Poisson) whether or not earlier ones were answered. Each attempt is
`POST /ingest` of 1 MiB of JSON on a connection of its own, the whole body written before
the answer is read, abandoned after 1 s. Retries: `none`, `polite` (after a 503, its
Retry-After capped at 1 s, ±25 %; after a timeout, at once) or `storm` (at once), up to 3
more attempts.

`capacity` measures C: 8 clients in closed loop for 4 s (run it against a server with no
limit); the median of the 2xx per second. `spike` then runs 0.6 C for 5 s, 3 C for 5 s and
0.6 C for 8 s, and prints, per second, the 2xx, 503s, timeouts and errors, and the second
after the spike from which the 2xx stay at 0.9 x the base or more.

    python3 load/clients/retry_storm.py PORT capacity
    python3 load/clients/retry_storm.py PORT spike C [none|polite|storm]
"""

import asyncio
import json
import random
import statistics
import sys
import time

BODY_BYTES = 1 << 20
DEADLINE = 1.0


def json_body():
    items = [{"id": i, "name": "x" * 40, "v": [i, i * 2, i * 3]} for i in range(9000)]
    doc = json.dumps({"items": items}).encode()
    return doc + b" " * (BODY_BYTES - len(doc)) if len(doc) < BODY_BYTES else doc


class Run:
    def __init__(self, port, retry, seed):
        self.port, self.retry = port, retry
        self.rng = random.Random(seed)
        self.body = json_body()
        self.head = (
            "POST /ingest HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(self.body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.events = []
        self.t0 = time.monotonic()

    async def exchange(self):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(self.head)
            writer.write(self.body)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            headers = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if length:
                await reader.readexactly(length)
            return status, headers
        finally:
            writer.close()

    async def attempt(self):
        try:
            status, headers = await asyncio.wait_for(self.exchange(), DEADLINE)
        except asyncio.TimeoutError:
            return "timeout", {}
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            return "error", {}
        kind = "ok" if status < 300 else "refused" if status == 503 else "error"
        return kind, headers

    async def job(self):
        for attempt in range(4):
            kind, headers = await self.attempt()
            self.events.append((time.monotonic() - self.t0, kind))
            if kind == "ok" or self.retry == "none" or attempt == 3:
                return
            if kind == "refused" and self.retry == "polite":
                wait = min(1.0, float(headers.get("retry-after", "1")))
                await asyncio.sleep(wait * self.rng.uniform(0.75, 1.25))

    async def closed_loop(self, clients, seconds):
        self.t0 = time.monotonic()

        async def client():
            while time.monotonic() - self.t0 < seconds:
                kind, _ = await self.attempt()
                self.events.append((time.monotonic() - self.t0, kind))

        await asyncio.gather(*(client() for _ in range(clients)))

    async def arrive(self, phases):
        self.t0 = time.monotonic()
        jobs, at = [], 0.0
        for rate, seconds in phases:
            end = at + seconds
            while True:
                at += self.rng.expovariate(rate)
                if at >= end:
                    at = end
                    break
                delay = self.t0 + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                jobs.append(asyncio.create_task(self.job()))
        await asyncio.gather(*jobs)

    def per_second(self, seconds):
        counts = {kind: [0] * seconds for kind in ("ok", "refused", "timeout", "error")}
        for at, kind in self.events:
            counts[kind][min(int(at), seconds - 1)] += 1
        return counts


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "capacity":
        probe = Run(port, "none", 1)
        asyncio.run(probe.closed_loop(8, 4.0))
        print(f"{statistics.median(probe.per_second(4)['ok']):.0f}")
        return
    capacity = float(sys.argv[3])
    retry = sys.argv[4] if len(sys.argv) > 4 else "storm"
    spike = Run(port, retry, 7)
    base = 0.6 * capacity
    asyncio.run(spike.arrive([(base, 5.0), (3 * capacity, 5.0), (base, 8.0)]))
    counts = spike.per_second(19)
    recovered = next(
        (s - 10 for s in range(10, 18) if all(x >= 0.9 * base for x in counts["ok"][s:18])),
        None,
    )
    print(f"C = {capacity:.0f}/s, retries: {retry}")
    for kind in ("ok", "refused", "timeout", "error"):
        print(f"{kind:8}", " ".join(f"{x:4d}" for x in counts[kind]))
    print("recovered", "never" if recovered is None else f"{recovered} s after the spike")


if __name__ == "__main__":
    main()
