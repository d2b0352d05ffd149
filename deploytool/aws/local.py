"""An AwsSession for a local endpoint (the sandbox's moto server), with static dummy credentials
so the sandbox never depends on, or sends, the developer's real AWS credentials."""

from __future__ import annotations

import boto3

from deploytool.aws.session import AwsSession


def local_session(*, region: str, endpoint_url: str | None) -> AwsSession:
    boto = boto3.Session(aws_access_key_id="sandbox", aws_secret_access_key="sandbox", region_name=region)
    return AwsSession(region=region, endpoint_url=endpoint_url, boto_session=boto)
