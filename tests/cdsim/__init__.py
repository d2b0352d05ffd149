"""A CodeDeploy service simulator for tests and benchmarks, plugged in at the botocore level.

    sim = CodeDeploySim(clock, fleet={"asg-a": ["i-1", "i-2"]})
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    install(sim, session)            # then build clients (AwsSession(boto_session=session))

Modules: model.py (state), sim.py (time and strategy), api_setup.py / api_deploy.py (operations),
wire.py (the botocore handler), fleet.py (instances from moto's Auto Scaling).
"""

from tests.cdsim.sim import CodeDeploySim, SimError, seeded_durations
from tests.cdsim.wire import install

__all__ = ["CodeDeploySim", "SimError", "install", "seeded_durations"]
