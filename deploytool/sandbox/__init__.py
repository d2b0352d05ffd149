"""The sandbox: a whole fleet on one machine, deployed like production.

A moto server (started and stopped by the tool on a free loopback port) plays S3, EC2, Auto
Scaling and SQS; each instance of each group's ASG is a directory with its own deployment root,
install destination and processes; a lifecycle runner compatible with the CodeDeploy agent runs
each deployment's hooks there; the `local` backend schedules instances with CodeDeploy's
strategy semantics. Modules:

- procs: process helpers (liveness by pid, process groups, pidfiles, the record of started pids)
- motoserver: start/stop the moto server subprocess
- imds: the fake instance metadata service (IMDSv2) and the notices it serves (`fab sandbox-interrupt`)
- faults: a hard kill of an instance's worker and watcher (a power-off)
- appspec: parse and validate appspec.yml 0.0
- instance: one instance's directory layout (absolute instance paths mapped under its root)
- scripts: run one hook script as the agent does (timeout, process group, log)
- install: the Install event (files, fileExistsBehavior, cleanup of the previous install, permissions)
- runner: the lifecycle of one deployment on one instance
- state: the sandbox's service-side records (groups' last successful revisions)
- fleet: the sandbox fleet in moto (launch template, one ASG per group, instance dirs, env files)
- backend: the `local` rollout backend
- session: SandboxSession, which starts everything and stops everything it started
- autoscaler: scale-out and scale-in during a release (`fab sandbox --churn`)
- load, report, workrepo, run: the `fab sandbox` run
"""
