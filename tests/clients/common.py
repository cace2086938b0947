"""Shared by the client scripts: redis-py (Debian's python3-redis 4.3.x) connections
from a chosen source address, and the bounds every script runs under.

The scripts are run with /usr/bin/python3 by the integration tests in
tests/tests/diagnose.rs. Each prints "started" right before its load begins, flushes
every line, and stops by itself after --seconds (the tests also kill it on drop).
"""

import argparse
import socket
import time

import redis


class BoundConnection(redis.Connection):
    """A redis-py connection whose socket is bound to `source_address` before it
    connects. redis-py 4.3 has no option for a source address; `_connect` is the one
    place that creates the socket, so this is the whole change."""

    def __init__(self, source_address, **kwargs):
        super().__init__(**kwargs)
        self.source_address = source_address

    def _connect(self):
        sock = socket.create_connection(
            (self.host, self.port),
            self.socket_connect_timeout,
            source_address=(self.source_address, 0),
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.socket_timeout)
        return sock


def pool(source, port, max_connections=None, timeout=5.0):
    """A connection pool whose connections come from `source`."""
    return redis.ConnectionPool(
        connection_class=BoundConnection,
        source_address=source,
        host="127.0.0.1",
        port=port,
        max_connections=max_connections,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
    )


def client(source, port, timeout=5.0):
    """A new redis.Redis with its own pool: its first command opens a new connection."""
    return redis.Redis(connection_pool=pool(source, port, timeout=timeout))


# What a failed attempt raises: "-ERR max number of clients reached" (redis-py maps
# it to ConnectionError), the close or reset that replaces it, or a timeout when
# the server cannot accept at all.
FAILURES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True, help="stop after this long")
    return p


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def passed(self):
        return time.monotonic() >= self.end

    def sleep(self, seconds):
        """Sleeps `seconds`, or less if the deadline comes first."""
        time.sleep(max(0.0, min(seconds, self.end - time.monotonic())))


def say(*words):
    print(*words, flush=True)


def local_addr(r):
    """ip:port of the connection a redis.Redis made (the address Redis sees)."""
    conn = r.connection_pool._available_connections[0]
    ip, port = conn._sock.getsockname()[:2]
    return f"{ip}:{port}"
