"""Glue gateway: the Data Catalog's database and tables behind Athena (read only)."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error, error_code


class GlueGateway:
    def __init__(self, session: AwsSession) -> None:
        self.client = session.client("glue")

    def database_exists(self, name: str) -> bool:
        try:
            self.client.get_database(Name=name)
        except ClientError as exc:
            if error_code(exc) == "EntityNotFoundException":
                return False
            raise describe_aws_error(exc, f"Glue GetDatabase {name}") from exc
        except BotoCoreError as exc:
            raise describe_aws_error(exc, f"Glue GetDatabase {name}") from exc
        return True

    def table_exists(self, database: str, name: str) -> bool:
        try:
            self.client.get_table(DatabaseName=database, Name=name)
        except ClientError as exc:
            if error_code(exc) == "EntityNotFoundException":
                return False
            raise describe_aws_error(exc, f"Glue GetTable {database}.{name}") from exc
        except BotoCoreError as exc:
            raise describe_aws_error(exc, f"Glue GetTable {database}.{name}") from exc
        return True
