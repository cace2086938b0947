"""A connection leak: every --every seconds a new redis.Redis (a new pool, so a new
connection) runs one command and is kept, never closed, as code that builds a
client per request and stores it somewhere would do. Prints "conn IP:PORT" for
each connection, oldest first."""

from common import Deadline, client, local_addr, parser, say


def main():
    p = parser(__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--every", type=float, default=0.2)
    p.add_argument("--max", type=int, default=100, help="connections to leak at most")
    args = p.parse_args()
    deadline = Deadline(args.seconds)
    kept = []
    say("started")
    while len(kept) < args.max and not deadline.passed():
        r = client(args.source, args.port)
        r.incr("leak:requests")
        kept.append(r)
        say("conn", local_addr(r))
        deadline.sleep(args.every)
    # Hold them until the deadline: the process ending would close them all.
    deadline.sleep(args.seconds)
    say("done", len(kept))


main()
