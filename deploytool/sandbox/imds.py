"""The sandbox's fake instance metadata service: IMDSv2 for every sandbox instance, and the notices it serves.

- One process per sandbox (`python -m deploytool.sandbox.imds --root ROOT --port PORT`, run and stopped like the
  moto server: ImdsServer, run/imds.pid), serving each instance under its own prefix: the instance's env file
  names `DEPLOYTOOL_IMDS_ENDPOINT=http://127.0.0.1:PORT/<instance id>`, which the interruption watcher reads.
- IMDSv2's token flow: PUT <prefix>/latest/api/token with X-aws-ec2-metadata-token-ttl-seconds (1-21600) gives a
  token; every GET must carry it (X-aws-ec2-metadata-token), else 401; a PUT with a forwarding header is refused
  (403), as on EC2.
- What it serves comes from <instance dir>/imds.json, written by `post_notice` (`fab sandbox-interrupt`, the
  tests, bench/interrupt.py), so any process can post a notice to a running sandbox:
  meta-data/instance-id, iam/security-credentials/<role> (made-up credentials the moto server takes, so the
  watcher's signed S3 record lands in the sandbox's bucket); spot/instance-action ({"action": "terminate",
  "time": now + 120 s}, ISO 8601 UTC), events/recommendations/rebalance ({"noticeTime"}),
  autoscaling/target-lifecycle-state ("InService", or "Terminated" after a terminate notice); anything unset
  is a 404.
"""

from __future__ import annotations

import argparse
import datetime
import json
import secrets
import sys
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from deploytool.sandbox.motoserver import HOST, MotoServer

NOTICES = ("spot", "rebalance", "terminate")
SPOT_NOTICE_S = 120
STATE_FILE = "imds.json"
ROLE = "deploytool-sandbox-instance"  # the instance profile's role it serves credentials of (moto takes any)
IMDS_MARKER = b"deploytool.sandbox.imds"  # a word of its command line: stop_recorded checks it before a signal


def iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def credentials() -> dict[str, str]:
    expires = time.time() + 6 * 3600
    return {
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": "ASIASANDBOXINSTANCE",
        "SecretAccessKey": "sandbox-secret",
        "Token": "sandbox-session-token",
        "Expiration": iso(expires),
    }


def post_notice(
    instance_root: Path, kind: str, *, seconds: int = SPOT_NOTICE_S, now: float | None = None
) -> dict[str, Any]:
    """Make the instance's metadata say `kind` (spot: interrupted in `seconds`). Returns what it now serves."""
    if kind not in NOTICES:
        raise ValueError(f"notice {kind!r}: allowed: {', '.join(NOTICES)}")
    moment = time.time() if now is None else now
    path = instance_root / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {}
    if kind == "spot":
        state["spot"] = {"action": "terminate", "time": iso(moment + seconds)}
    elif kind == "rebalance":
        state["rebalance"] = {"noticeTime": iso(moment)}
    else:
        state["target_lifecycle_state"] = "Terminated"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state) + "\n")
    tmp.replace(path)
    return dict(state)


class ImdsServer(MotoServer):
    name = "the fake instance metadata service"
    kind = "imds"
    ready_path = "/ping"

    def __init__(self, *, root: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root

    def argv(self, port: int) -> list[str]:
        return [self.python, "-m", "deploytool.sandbox.imds", "--root", str(self.root), "--port", str(port)]

    def endpoint(self, instance_id: str) -> str:
        return f"{self.url}/{instance_id}"


def _state(root: Path, instance_id: str) -> dict[str, Any] | None:
    """The instance's served state ({} when nothing was posted), or None when no such instance."""
    matches = [d for d in root.glob(f"*/{instance_id}") if d.is_dir()]
    if not matches:
        return None
    try:
        return dict(json.loads((matches[0] / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def make_handler(root: Path) -> type[BaseHTTPRequestHandler]:
    tokens: dict[str, float] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: str = "", content_type: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _split(self) -> tuple[str, str]:
            parts = self.path.lstrip("/").split("/", 1)
            return parts[0], "/" + (parts[1] if len(parts) > 1 else "")

        def do_PUT(self) -> None:
            instance_id, rest = self._split()
            if rest != "/latest/api/token" or _state(root, instance_id) is None:
                return self._send(404)
            if self.headers.get("X-Forwarded-For"):
                return self._send(403)
            try:
                ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
            except ValueError:
                return self._send(400)
            if not 1 <= ttl <= 21600:
                return self._send(400)
            token = secrets.token_urlsafe(24)
            tokens[token] = time.monotonic() + ttl
            self._send(200, token)

        def do_GET(self) -> None:
            if self.path == "/ping":
                return self._send(200, "ok")
            instance_id, rest = self._split()
            state = _state(root, instance_id)
            if state is None:
                return self._send(404)
            token = self.headers.get("X-aws-ec2-metadata-token", "")
            if tokens.get(token, 0.0) < time.monotonic():
                return self._send(401)
            path = rest.removeprefix("/latest/meta-data/")
            if path == "instance-id":
                return self._send(200, instance_id)
            if path == "iam/security-credentials/":
                return self._send(200, ROLE)
            if path == f"iam/security-credentials/{ROLE}":
                return self._send(200, json.dumps(credentials()), "application/json")
            if path == "spot/instance-action" and state.get("spot"):
                return self._send(200, json.dumps(state["spot"]), "application/json")
            if path == "events/recommendations/rebalance" and state.get("rebalance"):
                return self._send(200, json.dumps(state["rebalance"]), "application/json")
            if path == "autoscaling/target-lifecycle-state":
                return self._send(200, str(state.get("target_lifecycle_state", "InService")))
            self._send(404)

    return Handler


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description="the sandbox's fake IMDS")
    parser.add_argument("--root", required=True, type=Path, help="the sandbox's instances directory")
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((HOST, args.port), make_handler(args.root))
    server.daemon_threads = True
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main(sys.argv[1:]))
