"""Blocking consumers: --clients threads, each with its own connection, waiting in
BLPOP on an empty list (--block seconds at a time) until --seconds pass. Prints
"ready" once every connection is open."""

import threading

from common import Deadline, client, parser, say


def main():
    p = parser(__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--block", type=int, default=2, help="BLPOP timeout (s)")
    args = p.parse_args()
    deadline = Deadline(args.seconds)
    clients = [client(args.source, args.port, timeout=args.block + 5) for _ in range(args.clients)]
    for r in clients:
        assert r.ping()  # connects
    say("started")
    say("ready", len(clients))

    def consume(r):
        while not deadline.passed():
            r.blpop("jobs:empty", timeout=args.block)

    threads = [threading.Thread(target=consume, args=(r,)) for r in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    say("done")


main()
