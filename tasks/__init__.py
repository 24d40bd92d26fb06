"""newsflow's pipeline stages: one module per stage, plain functions with thin Prefect tasks."""

import os

# Prefect defaults that are right for a pipeline that must run offline on a small machine:
# no analytics call home, and enough time for the ephemeral server to start on a loaded
# 2-core box (it takes 8-17 s here; the default 20 s limit fails spuriously).
# setdefault: a user's own environment always wins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
