"""Short-lived connections, one at a time: from each of --addresses consecutive
source addresses starting at --first, open a connection (a new redis.Redis), PING,
close it; round after round, --rate connections per second in all.

With one address and a low rate this is a calm, healthy per-request client; with
hundreds of addresses it is an instance-per-connection (serverless-style) fan-out.
Prints "started", then "round N" after each full round."""

import ipaddress

from common import Deadline, client, parser, say


def main():
    p = parser(__doc__)
    p.add_argument("--first", required=True, help="first source address")
    p.add_argument("--addresses", type=int, default=1)
    p.add_argument("--rate", type=float, required=True, help="connections per second")
    p.add_argument("--rounds", type=int, default=1000)
    args = p.parse_args()
    deadline = Deadline(args.seconds)
    first = ipaddress.IPv4Address(args.first)
    sources = [str(first + i) for i in range(args.addresses)]
    say("started")
    for n in range(args.rounds):
        for source in sources:
            if deadline.passed():
                return
            r = client(source, args.port)
            assert r.ping()
            r.connection_pool.disconnect()
            deadline.sleep(1.0 / args.rate)
        say("round", n + 1)


main()
