"""newsflow's Prefect flows and command line: wiring only, the work is in `tasks/`."""

import tasks  # noqa: F401  (sets Prefect's offline defaults before anything imports prefect)
