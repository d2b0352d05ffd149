"""Stage 5, rollout: a backend-agnostic orchestrator driving a Backend (codedeploy or local)."""
