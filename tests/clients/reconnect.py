"""A client that needs a connection and retries when it cannot get one: on each
attempt it connects and sends PING; a refusal, rejection ("max number of clients
reached"), reset or timeout is a failure and it tries again.

--mode storm retries at once, as a naive retry loop does. --mode backoff waits
base * 2^n (capped) with jitter before retry n, as a well-behaved client does.
A served attempt closes the connection, resets the backoff and waits --pause.
Prints "started", then "served"/"failed" counts at the end."""

import random

from common import FAILURES, Deadline, client, parser, say


def main():
    p = parser(__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--mode", choices=["storm", "backoff"], required=True)
    p.add_argument("--max-attempts", type=int, default=10000)
    p.add_argument("--base", type=float, default=0.05, help="first backoff (s)")
    p.add_argument("--cap", type=float, default=2.0, help="longest backoff (s)")
    p.add_argument("--pause", type=float, default=0.5, help="wait after a served attempt (s)")
    p.add_argument("--timeout", type=float, default=2.0, help="socket timeout (s)")
    args = p.parse_args()
    deadline = Deadline(args.seconds)
    served = failed = streak = 0
    say("started")
    for _ in range(args.max_attempts):
        if deadline.passed():
            break
        r = client(args.source, args.port, timeout=args.timeout)
        try:
            r.ping()
            served += 1
            streak = 0
            wait = args.pause
        except FAILURES:
            failed += 1
            streak += 1
            if args.mode == "storm":
                wait = 0.0
            else:
                # "Equal jitter": between half and all of the exponential delay.
                delay = min(args.cap, args.base * 2 ** (streak - 1))
                wait = delay * random.uniform(0.5, 1.0)
        finally:
            r.connection_pool.disconnect()
        deadline.sleep(wait)
    say("served", served, "failed", failed)


main()
