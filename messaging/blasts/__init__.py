"""A blast from alert to end: intake, the lifecycle, expansion into the ledger, approval,
scheduling, winners, dry runs, operator actions, export."""
