"""Connects that fail, for telling why a connect failed: --count attempts to
--host:--port, each a new socket.

--lib socket: blocking connect() calls with no timeout of their own, all at once
(one thread each): against a host whose SYNs are dropped each ends when the
kernel gives up (ETIMEDOUT), against an unresolvable neighbour with EHOSTUNREACH.
--lib redis-py: one at a time, redis.Redis(socket_connect_timeout=--timeout).ping():
redis-py gives up and closes the socket while it is still connecting.

Prints "started", one "failed <errno or timeout>" per attempt, then "done <n>"."""

import socket
import threading
import time

import redis

from common import FAILURES, Deadline, parser, say


def blocking(host, port):
    s = socket.socket()
    try:
        s.connect((host, port))
        return "connected"
    except OSError as e:
        return f"errno {e.errno}"
    finally:
        s.close()


def main():
    p = parser(__doc__)
    p.add_argument("--host", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--lib", choices=["socket", "redis-py"], required=True)
    p.add_argument("--timeout", type=float, default=0.3, help="redis-py's connect timeout (s)")
    args = p.parse_args()
    deadline = Deadline(args.seconds)
    say("started")
    if args.lib == "socket":
        results = [None] * args.count

        def attempt(i):
            results[i] = blocking(args.host, args.port)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(args.count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline.end - time.monotonic()))
        for r in results:
            say("failed", r)
    else:
        for _ in range(args.count):
            if deadline.passed():
                break
            r = redis.Redis(
                host=args.host,
                port=args.port,
                socket_connect_timeout=args.timeout,
                socket_timeout=args.timeout,
            )
            try:
                r.ping()
                say("failed", "no: served")
            except redis.exceptions.TimeoutError:
                say("failed", "timeout")
            except FAILURES as e:
                say("failed", type(e).__name__)
            finally:
                r.close()
    say("done", args.count)


if __name__ == "__main__":
    main()
