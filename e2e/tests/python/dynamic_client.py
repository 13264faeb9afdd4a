"""Drive an Oakestra root with the official Kubernetes Python client's DynamicClient,
as GitOps scripts do: discovery, server-side apply under field managers, conflicts,
dry runs, JSON patch, paged lists, watches with bookmarks.

Usage: dynamic_client.py KUBECONFIG. Prints one JSON object with what it saw; the Rust
test (e2e/tests/python_client.rs) checks it.
"""
import json
import sys

from kubernetes import client as core, config, dynamic, watch
from kubernetes.client import api_client
from kubernetes.dynamic.exceptions import ConflictError

client = dynamic.DynamicClient(api_client.ApiClient(configuration=config.load_kube_config(config_file=sys.argv[1])))
services = client.resources.get(api_version="oakestra.io/v1", kind="Service")
seen = {}


def service(name, replicas):
    return {
        "apiVersion": "oakestra.io/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": {"set": "py"}},
        "spec": {"replicas": replicas, "template": {"runtime": "process", "executable": "/bin/true"}},
    }


created = services.server_side_apply(body=service("dyn", 1), field_manager="py")
seen["managers"] = [entry["manager"] for entry in created.metadata.managedFields]
again = services.server_side_apply(body=service("dyn", 1), field_manager="py")
seen["reapply_same_version"] = again.metadata.resourceVersion == created.metadata.resourceVersion

try:
    services.server_side_apply(body=service("dyn", 3), field_manager="other")
    seen["conflict"] = None
except ConflictError as e:
    seen["conflict"] = [cause["field"] for cause in json.loads(e.body)["details"]["causes"]]

dry = services.server_side_apply(body=service("dyn", 5), field_manager="other", force_conflicts=True, dry_run="All")
seen["dry_run_replicas"] = dry.spec.replicas
seen["stored_after_dry_run"] = services.get(name="dyn", namespace="default").spec.replicas
forced = services.server_side_apply(body=service("dyn", 3), field_manager="other", force_conflicts=True)
seen["forced_replicas"] = forced.spec.replicas
seen["replicas_owner"] = sorted(
    entry["manager"]
    for entry in forced.to_dict()["metadata"]["managedFields"]
    if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {})
)

patched = services.patch(
    name="dyn",
    namespace="default",
    body=[{"op": "replace", "path": "/spec/replicas", "value": 4}],
    content_type="application/json-patch+json",
)
seen["json_patched_replicas"] = patched.spec.replicas

for i in range(3):
    services.server_side_apply(body=service(f"page-{i}", 1), field_manager="py")
first = services.get(namespace="default", label_selector="set=py", limit=2)
rest = services.get(namespace="default", label_selector="set=py", limit=2, _continue=first.metadata["continue"])
seen["pages"] = [len(first.items), len(rest.items)]

# The DynamicClient's watch takes no bookmarks; the generated API's does.
bookmarks = 0
for event in watch.Watch().stream(
    core.CustomObjectsApi(client.client).list_namespaced_custom_object,
    "oakestra.io",
    "v1",
    "default",
    "services",
    resource_version=rest.metadata.resourceVersion,
    allow_watch_bookmarks=True,
    timeout_seconds=15,  # the server sends one every 10 s
):
    if event["type"] == "BOOKMARK":
        bookmarks += 1
        break
seen["bookmark"] = bookmarks > 0

print(json.dumps(seen))
