"""The only package that imports boto3: one gateway module per AWS service, all built from one
AwsSession (one boto3 session, one retry configuration, one client per service shared by all
threads). Tests hand the gateways a session pointing at moto or at the CodeDeploy simulator."""
