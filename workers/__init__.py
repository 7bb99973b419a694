"""Process entry points and wiring: the Temporal worker, the dev stack launcher and the `rsm` command."""
