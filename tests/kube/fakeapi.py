"""A small in-process stand-in for the two Kubernetes API calls ``kube/scaling.py`` makes: GET and
PATCH (JSON Patch, RFC 6902) of one RayCluster, served over HTTP on a free loopback port so the
official client's real requests (paths, content type, body) are what it sees. A ``test`` op that
fails is refused with 422 like the API server does; each accepted patch bumps the resourceVersion.

Also a fake KubeRay operator over it (``FakeOperator``): pods follow each group's ``replicas``
(``workersToDelete`` first, as KubeRay deletes), each pod a Ray node with its group's labels and
resources and its pod name as hostname."""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client

from scheduler.runtime.nodewatch import RayNode

PATH = "/apis/ray.io/v1/namespaces/{ns}/rayclusters/{name}"


class PatchRefused(Exception):
    pass


def apply_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """``test`` and ``add`` on object members: the ops ``kube/scaling.py`` sends (others refused)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = doc
        for k in parents:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if isinstance(node, list):
            raise PatchRefused(f"unexpected list target {op['path']}")
        if op["op"] == "test":
            if node.get(last) != op["value"]:
                raise PatchRefused(f"test failed at {op['path']}")
        elif op["op"] == "add":
            node[last] = copy.deepcopy(op["value"])
        else:
            raise PatchRefused(f"unexpected op {op['op']}")
    return doc


class FakeApiServer:
    def __init__(self, raycluster: dict[str, Any], namespace: str = "mcsched") -> None:
        self.rc = copy.deepcopy(raycluster)
        self.rc["metadata"].update(namespace=namespace, resourceVersion="1")
        self.path = PATH.format(ns=namespace, name=self.rc["metadata"]["name"])
        self.gets = 0
        self.patches: list[tuple[str, Any]] = []  # (content type, body) of every PATCH received
        self.race_next_patch = False  # change the object just before the next PATCH lands
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api(self) -> client.CustomObjectsApi:
        """The official client, pointed at this server."""
        return client.CustomObjectsApi(client.ApiClient(client.Configuration(host=self.url)))

    def bump(self) -> None:
        self.rc["metadata"]["resourceVersion"] = str(int(self.rc["metadata"]["resourceVersion"]) + 1)

    def group(self, name: str) -> dict[str, Any]:
        return next(g for g in self.rc["spec"]["workerGroupSpecs"] if g["groupName"] == name)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path != fake.path:
                    return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                with fake._lock:
                    fake.gets += 1
                    self._send(200, fake.rc)

            def do_PATCH(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ctype = self.headers.get("Content-Type", "")
                with fake._lock:
                    fake.patches.append((ctype, body))
                    if self.path != fake.path:
                        return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    if ctype != "application/json-patch+json":
                        return self._send(415, {"kind": "Status", "code": 415, "reason": "UnsupportedMediaType"})
                    if fake.race_next_patch:
                        fake.race_next_patch = False
                        fake.bump()  # the operator wrote the status in between
                    try:
                        fake.rc = apply_json_patch(fake.rc, body)
                    except PatchRefused as exc:
                        return self._send(422, {"kind": "Status", "code": 422, "reason": "Invalid", "message": str(exc)})
                    fake.bump()
                    self._send(200, fake.rc)

        return Handler


class FakeOperator:
    """KubeRay's part: each group's pods follow its ``replicas``; ``rows`` is Ray's node table."""

    def __init__(self, server: FakeApiServer) -> None:
        self.server = server
        self.serial = 0
        self.pods: dict[str, tuple[str, str]] = {}  # pod name -> (group, node id), alive ones
        self.rows: list[RayNode] = []
        self.deleted: list[str] = []
        self.busy: set[str] = set()  # Ray node ids holding a placement group's bundle
        self.sync()

    def _add(self, group: dict[str, Any]) -> None:
        self.serial += 1
        pod = f"mcsched-{group['groupName']}-worker-{self.serial:05d}"
        node_id = f"node{self.serial:04d}"
        self.pods[pod] = (group["groupName"], node_id)
        labels = dict(group["labels"])  # KubeRay starts the pod's Ray node with the group's labels
        resources = {k: float(v) for k, v in group["resources"].items()}
        self.rows.append(RayNode(node_id, True, labels, resources, pod))

    def _delete(self, pod: str) -> None:
        _, node_id = self.pods.pop(pod)
        self.deleted.append(pod)
        self.rows = [RayNode(r.node_id, False, r.labels, r.resources, r.hostname) if r.node_id == node_id else r for r in self.rows]

    def sync(self) -> None:
        for group in self.server.rc["spec"]["workerGroupSpecs"]:
            name = group["groupName"]
            mine = sorted(p for p, (g, _) in self.pods.items() if g == name)
            for pod in (group.get("scaleStrategy") or {}).get("workersToDelete") or []:
                if pod in mine:
                    self._delete(pod)
                    mine.remove(pod)
            while len(mine) > group["replicas"]:  # in-tree autoscaling off: the operator picks
                self._delete(mine.pop(0))
            for _ in range(group["replicas"] - len(mine)):
                self._add(group)

    def read(self) -> list[RayNode]:
        return list(self.rows)

    def busy_nodes(self) -> set[str]:
        return set(self.busy)

    def pod_of(self, group: str, *, newest: bool = True) -> str:
        pods = sorted(p for p, (g, _) in self.pods.items() if g == group)
        return pods[-1] if newest else pods[0]
