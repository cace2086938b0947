"""One application instance with a fixed connection pool (redis-py ConnectionPool
with max_connections), every connection checked out and kept busy: each sends PING
every --ping-every seconds (only the first --busy of them with --busy: a warm pool
whose other members sit idle). Prints "ready" once the whole pool is connected."""

from common import Deadline, parser, pool, say


def main():
    p = parser(__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--ping-every", type=float, default=1.0)
    p.add_argument("--busy", type=int, default=None, help="connections that PING (default: all)")
    args = p.parse_args()
    deadline = Deadline(args.seconds)
    instance = pool(args.source, args.port, max_connections=args.size)
    say("started")
    conns = [instance.get_connection("PING") for _ in range(args.size)]
    say("ready", len(conns))
    while not deadline.passed():
        for c in conns[: args.busy]:
            c.send_command("PING")
            assert c.read_response() == b"PONG"
        deadline.sleep(args.ping_every)
    for c in conns:
        instance.release(c)
    instance.disconnect()
    say("done")


main()
