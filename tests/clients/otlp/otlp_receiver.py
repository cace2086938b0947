"""A local OTLP/HTTP receiver for the integration tests (tests/tests/otlp.rs).

It listens on 127.0.0.1:--port, takes POSTs to /v1/metrics and /v1/logs with
protobuf bodies, decodes each with the OpenTelemetry project's own definitions (the
`opentelemetry-proto` package, pinned in requirements.txt and installed by `cargo
xtask setup` into pylib/ beside this file) and prints what it got as one JSON line:
{"path", "content_type", "request"} where request is the decoded message in
protobuf's JSON mapping with the .proto field names. A body that does not decode
is answered 400 and printed as {"path", "error"}. With --certfile and --keyfile it
speaks HTTPS. Prints "listening PORT" first, and stops by itself after --seconds.
"""

import argparse
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pylib"))

from google.protobuf import json_format  # noqa: E402
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2  # noqa: E402
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2  # noqa: E402

SERVICES = {
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}

LOCK = threading.Lock()


def emit(obj):
    with LOCK:
        sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body=b"", content_type="application/x-protobuf"):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        service = SERVICES.get(self.path)
        if service is None:
            emit({"path": self.path, "error": "unknown path"})
            self.reply(404, b"not found", "text/plain")
            return
        request_type, response_type = service
        try:
            request = request_type.FromString(body)
        except Exception as e:  # noqa: BLE001 - any decode failure is the answer
            emit({"path": self.path, "error": "decode: %s" % e})
            self.reply(400, b"bad protobuf", "text/plain")
            return
        emit(
            {
                "path": self.path,
                "content_type": self.headers.get("Content-Type"),
                "request": json_format.MessageToDict(
                    request, preserving_proto_field_name=True
                ),
            }
        )
        self.reply(200, response_type().SerializeToString())


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--keyfile", help="and this key (PEM)")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.certfile, args.keyfile)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Timer(args.seconds, server.shutdown).start()
    print("listening", server.server_address[1], flush=True)
    server.serve_forever()


main()
