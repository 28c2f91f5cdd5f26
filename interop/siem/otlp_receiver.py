"""An OTLP/HTTP receiver for the tests: logs and traces, JSON or protobuf.

Every request is parsed strictly with the official OpenTelemetry protobuf classes
(opentelemetry-proto): JSON with google.protobuf.json_format (unknown fields are an
error), protobuf with ParseFromString. A request that does not parse gets 400 with the
reason; one that does is appended to --out as one JSON line
{"signal": "logs"|"traces", "request": <the message as a dict>} and answered 200 with
an empty Export*ServiceResponse in the request's encoding.

    python otlp_receiver.py --out FILE [--port N]

Listens on 127.0.0.1 only and prints "listening on PORT" once it accepts connections.
"""

import argparse
import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SIGNALS = {
    "/v1/logs": ("logs", ExportLogsServiceRequest, ExportLogsServiceResponse),
    "/v1/traces": ("traces", ExportTraceServiceRequest, ExportTraceServiceResponse),
}

lock = threading.Lock()

ID_LENGTHS = {"traceId": 32, "spanId": 16, "parentSpanId": 16}


def ids_as_hex(node, from_protobuf):
    """OTLP/JSON writes trace and span ids as hex (not protobuf JSON's base64).

    protobuf's json_format reads them as base64, so for a JSON request the text is
    kept as sent and checked to be hex of the right length; for a protobuf request
    the bytes are turned into hex."""
    if isinstance(node, list):
        for item in node:
            ids_as_hex(item, from_protobuf)
    elif isinstance(node, dict):
        for key, value in list(node.items()):
            if key in ID_LENGTHS and isinstance(value, str):
                if from_protobuf:
                    node[key] = base64.b64decode(value).hex()
                elif len(value) != ID_LENGTHS[key] or any(c not in "0123456789abcdef" for c in value):
                    raise ValueError(f"{key} {value!r} is not {ID_LENGTHS[key]} lowercase hex digits")
            else:
                ids_as_hex(value, from_protobuf)


class Handler(BaseHTTPRequestHandler):
    out = None

    def log_message(self, fmt, *args):  # quiet
        pass

    def reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        signal = SIGNALS.get(self.path.split("?")[0])
        if signal is None:
            self.reply(404, b"unknown path\n", "text/plain")
            return
        name, request_type, response_type = signal
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        message = request_type()
        try:
            if content_type == "application/json":
                json_format.Parse(body.decode("utf-8"), message)
            elif content_type == "application/x-protobuf":
                message.ParseFromString(body)
            else:
                raise ValueError(f"unsupported content type {content_type!r}")
            as_dict = json_format.MessageToDict(message)
            ids_as_hex(as_dict, content_type == "application/x-protobuf")
        except Exception as e:  # noqa: BLE001 - any parse failure is the sender's
            self.reply(400, f"does not parse as {request_type.__name__}: {e}\n".encode(), "text/plain")
            return
        line = json.dumps({"signal": name, "request": as_dict})
        with lock:
            with open(self.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        if content_type == "application/json":
            self.reply(200, json_format.MessageToJson(response_type()).encode(), "application/json")
        else:
            self.reply(200, response_type().SerializeToString(), "application/x-protobuf")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    Handler.out = a.out
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
