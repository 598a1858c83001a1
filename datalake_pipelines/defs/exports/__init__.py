"""Export jobs: filtered catalog snapshots to files, with status and progress readable by task id (run id)."""
