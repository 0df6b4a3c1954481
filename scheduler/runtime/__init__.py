"""Ray adapters: the scheduler actor, the local cluster, the job driver and workloads."""
