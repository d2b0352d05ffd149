"""Plugs the simulator into botocore: a `before-send.codedeploy` handler answering every CodeDeploy
request with an AWSResponse, as the service would over HTTP (JSON 1.1 protocol).

botocore still serializes and validates each request against the real service model, signs it, runs
its retry logic (a ThrottlingException is retried with the client's retry mode) and parses the
response. Every call is counted per operation; a share of calls (`throttle_rate`, spread evenly:
0.3 throttles 3 calls in 10) is answered with ThrottlingException before doing anything.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HTTPHeaders

from tests.cdsim import api_deploy, api_setup
from tests.cdsim.sim import CodeDeploySim, SimError

OPERATIONS = {**api_setup.OPERATIONS, **api_deploy.OPERATIONS}
TARGET_PREFIX = "CodeDeploy_20141006."


class _Body(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        chunk = self.read()
        while chunk:
            yield chunk
            chunk = self.read()


def _response(request: AWSPreparedRequest, status: int, body: dict[str, Any]) -> AWSResponse:
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": str(uuid.uuid4())}
    return AWSResponse(request.url, status, HTTPHeaders.from_dict(headers), _Body(json.dumps(body).encode()))


def handle(sim: CodeDeploySim, request: AWSPreparedRequest) -> AWSResponse:
    target = request.headers.get("X-Amz-Target", b"")
    target = target.decode() if isinstance(target, bytes) else str(target)
    operation = target.removeprefix(TARGET_PREFIX)
    raw = request.body or b"{}"
    if not isinstance(raw, (str, bytes, bytearray)):  # a file-like body (botocore allows one)
        raw = raw.read()
    params = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    with sim.lock:
        sim.calls[operation] += 1
        if sim.should_throttle():
            sim.throttled[operation] += 1
            return _response(request, 400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
        handler = OPERATIONS.get(operation)
        if handler is None:
            return _response(
                request,
                400,
                {"__type": "UnknownOperationException", "message": f"the simulator does not model {operation}"},
            )
        sim.advance()
        try:
            body = handler(sim, params)
        except SimError as exc:
            return _response(request, 400, {"__type": exc.code, "message": exc.message})
        sim.advance()  # e.g. a StopDeployment starting a rollback
        return _response(request, 200, body)


def install(sim: CodeDeploySim, session: boto3.Session) -> None:
    """Answer this session's CodeDeploy requests with the simulator (register before creating clients)."""

    def before_send(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        return handle(sim, request)

    # botocore-stubs type every handler as returning None; a before-send handler returns the response to use
    session.events.register("before-send.codedeploy", before_send)  # type: ignore[arg-type]
