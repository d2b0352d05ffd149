"""The instance metadata service (IMDSv2) as the interruption watcher reads it.

- Endpoint: DEPLOYTOOL_IMDS_ENDPOINT (the sandbox gives each instance its own fake one), else
  http://169.254.169.254. Every request has a bounded timeout (1 s by default).
- Token flow: PUT /latest/api/token with a TTL header; every GET carries the token; a 401 (token expired)
  gets a fresh token once.
- `poll()` reads the three signals an instance gets before it goes away and returns the first one set:
  spot/instance-action (a spot interruption: JSON {"action": "terminate"|"stop"|"hibernate", "time": ISO}),
  autoscaling/target-lifecycle-state ("Terminated": the ASG is taking the instance out) and
  events/recommendations/rebalance (JSON {"noticeTime": ISO}: elevated risk of interruption). A 404 means
  "not set". `reachable()` tells an EC2 instance from anything else (no IMDS: the watcher does nothing).
"""

from __future__ import annotations

import datetime
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_S = 21600
SPOT_NOTICE_S = 120.0  # what AWS gives a spot instance; used when the notice's time cannot be read


class ImdsUnavailable(Exception):
    """No metadata service answered (not on EC2, or it is down)."""


@dataclass(frozen=True)
class Notice:
    kind: str  # "spot" | "terminated" | "rebalance"
    detail: str
    deadline: float | None  # wall-clock time the instance goes away, when the notice says (spot)


def endpoint_of(environ: Mapping[str, str]) -> str:
    return (environ.get("DEPLOYTOOL_IMDS_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def parse_time(text: str) -> float | None:
    try:
        moment = datetime.datetime.strptime(text.strip(), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=datetime.timezone.utc).timestamp()


class Imds:
    def __init__(self, endpoint: str, timeout_s: float = 1.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.token: str | None = None

    def _token(self) -> str:
        request = urllib.request.Request(
            f"{self.endpoint}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return str(response.read().decode().strip())
        except (OSError, ValueError) as exc:
            raise ImdsUnavailable(f"{self.endpoint}: {exc}") from None

    def get(self, path: str) -> str | None:
        """The text at /latest/meta-data/<path>, or None when it is not set (404)."""
        for attempt in range(2):
            if self.token is None:
                self.token = self._token()
            request = urllib.request.Request(
                f"{self.endpoint}/latest/meta-data/{path}", headers={"X-aws-ec2-metadata-token": self.token}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return str(response.read().decode())
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code == 401 and attempt == 0:
                    self.token = None
                    continue
                raise ImdsUnavailable(f"{self.endpoint}: {path}: HTTP {exc.code}") from None
            except (OSError, ValueError) as exc:
                raise ImdsUnavailable(f"{self.endpoint}: {path}: {exc}") from None
        raise ImdsUnavailable(f"{self.endpoint}: {path}: token refused")

    def reachable(self, tries: int = 3, pause_s: float = 1.0) -> bool:
        for attempt in range(tries):
            try:
                self.token = self._token()
                return True
            except ImdsUnavailable:
                if attempt < tries - 1:
                    time.sleep(pause_s)
        return False

    def poll(self) -> Notice | None:
        spot = self.get("spot/instance-action")
        if spot:
            try:
                data = json.loads(spot)
            except ValueError:
                data = {}
            action = str(data.get("action", "terminate"))
            deadline = parse_time(str(data.get("time", ""))) if isinstance(data, dict) else None
            return Notice("spot", f"spot interruption: {action} at {data.get('time', '?')}", deadline)
        state = self.get("autoscaling/target-lifecycle-state")
        if state and state.strip() == "Terminated":
            return Notice("terminated", "Auto Scaling target lifecycle state: Terminated", None)
        rebalance = self.get("events/recommendations/rebalance")
        if rebalance:
            return Notice("rebalance", f"rebalance recommendation: {rebalance.strip()}", None)
        return None
