"""API serving for real: an api-serving Job with ``spec.serve`` runs as Ray Serve applications.

How the pieces fit (one Ray cluster, any number of served models):

- **Replicas are placements.** Each replica is its own api-serving engine job
  ``<job>-r<k>`` of ``gpusPerReplica`` GPUs, submitted to the scheduler actor like any job
  (so it is offered to the holder, pinned to Azure, waits or preempts, and is recorded in
  the ledger). Only once placed does it become a one-replica Serve application
  ``mcsched-<job>-r<k>`` whose placement group asks for its pool's Ray resource
  ``mcsched_<cloud>__<region>__<gpu>``: Ray can run it nowhere else.
- **One gateway.** The ``mcsched-gateway`` Serve application (route ``/``) speaks the
  OpenAI HTTP API, routes by ``model`` to the least-busy ready replica and counts the
  requests each replica has in flight. It is the only ingress, so its counts are exact.
- **The controller is the driver.** ``python -m scheduler run api.yaml`` (the Ray job) runs
  :mod:`scheduler.runtime.serve.controller`: it places ``replicas.min`` replicas, watches the
  gateway's in-flight counts, asks the engine for one more placement to scale up and releases
  one after a cool-down to scale down. Serve's own autoscaler is never used: it would place
  replicas without asking the scheduler.
- **A mailbox that dies with the driver.** The controller owns a small named actor
  (:mod:`scheduler.runtime.serve.control`); the gateway syncs with it. If the driver dies
  (``ray job stop`` past its grace period, a crash), the actor dies with it and the gateway
  deletes that service's replica applications and releases their capacity.

Modules without Ray (``naming``, ``policy``, ``openai``) are importable anywhere, e.g.
by the offline planner.
"""
