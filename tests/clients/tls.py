"""TLS clients of a Redis tls-port, with Python's ssl module (OpenSSL): --hold
connections that each get a PING answered and are kept open, then --attempts more,
one after the other, each counted as served (its PING answered; then kept open too)
or rejected (the server closed or reset it during the handshake or before
answering, as Redis does at maxclients). Prints "held N", then "served S rejected R",
and keeps every served connection open until --seconds have passed."""

import socket
import ssl

from common import Deadline, parser, say


def main():
    p = parser(__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--cacert", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--hold", type=int, default=0)
    p.add_argument("--attempts", type=int, default=0)
    args = p.parse_args()
    deadline = Deadline(args.seconds)
    ctx = ssl.create_default_context(cafile=args.cacert)
    ctx.load_cert_chain(args.cert, args.key)

    def attempt():
        """A TLS connection that answered PING, or None if the server turned it away."""
        sock = socket.create_connection(
            ("127.0.0.1", args.port), timeout=5, source_address=(args.source, 0)
        )
        try:
            tls = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
            tls.sendall(b"PING\r\n")
            if tls.recv(64).startswith(b"+PONG"):
                return tls
            tls.close()
        except (ssl.SSLError, ConnectionError, socket.timeout):
            sock.close()
        return None

    held = []
    for _ in range(args.hold):
        conn = attempt()
        assert conn is not None, "a connection to hold was turned away"
        held.append(conn)
    say("held", len(held))
    served = rejected = 0
    for _ in range(args.attempts):
        conn = attempt()
        if conn is None:
            rejected += 1
        else:
            served += 1
            held.append(conn)
    say("served", served, "rejected", rejected)
    while not deadline.passed():
        deadline.sleep(0.5)
    for conn in held:
        conn.close()


main()
