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
- **The scheduler actor owns the service** (``owner.py``). ``python -m scheduler run
  api.yaml`` (the Ray job) hands the document to the actor and follows it; the actor runs
  :mod:`scheduler.runtime.serve.controller` in a thread: it places ``replicas.min`` replicas,
  watches the gateway's in-flight counts, asks the engine for one more placement to scale up
  and releases one after a cool-down to scale down. Serve's own autoscaler is never used: it
  would place replicas without asking the scheduler. The actor keeps its services in
  ``serving.json``: the driver's death changes nothing, and a restarted actor resumes them.
- **A detached mailbox per service.** The controller publishes its routes to a small named,
  detached actor (:mod:`scheduler.runtime.serve.control`) that the gateway syncs with; it
  outlives an actor restart (the gateway keeps routing) and is removed when the service ends.
  The gateway deletes replica applications whose mailbox is gone and releases their capacity.

Modules without Ray (``naming``, ``policy``, ``openai``) are importable anywhere, e.g.
by the offline planner.
"""
