"""A slow consumer: asks for large replies and does not read them, as a client
that fetches more than it can process does. It stores a --value-kb value, then
sends a GET of it on one connection every --every seconds, up to --requests,
without reading a reply, and waits for the server to drop it (Redis's
client-output-buffer-limit for normal clients). Its receive buffer is set to
--rcvbuf-kb, as a busy consumer's fills: the replies then wait in the server's
send queue before they pile up in Redis. With --loops N it reconnects after each
drop and does it again, N times in all, as a consumer restarted by its supervisor
would; with --then-idle it reconnects once more after the last drop, PINGs, and
keeps that connection until --seconds pass (printing "idle"). Prints "started" before the first GETs, "dropped" after each drop, and
"kept" if a connection was not dropped within --seconds."""

import socket

import redis

from common import Deadline, client, parser, say

# tcpi_state values (include/net/tcp_states.h).
TCP_CLOSE = 7
TCP_CLOSE_WAIT = 8


def main():
    p = parser(__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--value-kb", type=int, default=1024)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--every", type=float, default=0.0)
    p.add_argument("--rcvbuf-kb", type=int, default=0, help="0: the kernel's default")
    p.add_argument("--loops", type=int, default=1)
    p.add_argument("--then-idle", action="store_true")
    args = p.parse_args()
    deadline = Deadline(args.seconds)
    r = client(args.source, args.port)
    r.set("slow:big", b"x" * (args.value_kb * 1024))
    say("started")
    for _ in range(args.loops):
        if not consume(r, args, deadline):
            say("kept")
            return
        say("dropped")
        r = client(args.source, args.port)
    if args.then_idle:
        r.ping()
        say("idle")
        while not deadline.passed():
            deadline.sleep(0.1)


def consume(r, args, deadline):
    """One connection that asks and never reads: whether the server dropped it."""
    conn = r.connection_pool.get_connection("GET")
    if args.rcvbuf_kb:
        conn._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf_kb * 1024)
    sock = conn._sock
    for _ in range(args.requests):
        try:
            conn.send_command("GET", "slow:big")
        except redis.exceptions.ConnectionError:
            return True  # dropped while it still asked
        deadline.sleep(args.every)
    # Read nothing: the replies pile up in the kernel's buffers, then in the server's,
    # until it drops us. The socket's TCP state says when without reading: CLOSE_WAIT
    # after the server's FIN, CLOSE after a reset.
    while not deadline.passed():
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        if info[0] in (TCP_CLOSE_WAIT, TCP_CLOSE):
            return True
        deadline.sleep(0.05)
    return False


main()
