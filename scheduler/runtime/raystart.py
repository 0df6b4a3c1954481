"""``python -m scheduler.runtime.raystart start --address ...``: Ray's own ``ray start`` for a worker
node of a loopback-only cluster.

Why not ``ray start`` itself: the cluster runs with Ray's single-node switch
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, see ``cluster.loopback_env``) so every process binds
to 127.0.0.1; with that switch ``ray start --address`` refuses to join (a guard meant for
macOS and Windows), and without it Ray "resolves" 127.0.0.1 to the host's routable address and
binds there. This entry point runs Ray's unchanged CLI with exactly two attributes set in this
one process: joining allowed, and the node's own address is loopback. Every process it starts
(raylet, agents, workers) inherits the switch and stays on loopback, as the head's do.
"""

from __future__ import annotations

import sys


def main() -> None:
    import ray._private.ray_constants as constants
    import ray._private.services as services

    constants.ENABLE_RAY_CLUSTER = True
    services.node_ip_address_from_perspective = lambda address=None: "127.0.0.1"  # type: ignore[attr-defined]
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *sys.argv[1:]]
    ray_main()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
