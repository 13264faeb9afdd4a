"""Drive an Oakestra root with the official Kubernetes Python client, as a user would.

Usage: official_client.py KUBECONFIG. Prints one JSON object with what it saw; the Rust
test (e2e/tests/python_client.rs) checks it.
"""
import json
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

GROUP, VERSION = "oakestra.io", "v1"

config.load_kube_config(config_file=sys.argv[1])
objects = client.CustomObjectsApi()
core = client.CoreV1Api()
seen = {}

service = {
    "apiVersion": "oakestra.io/v1",
    "kind": "Service",
    "metadata": {"name": "py-web", "labels": {"from": "python"}},
    "spec": {
        "replicas": 2,
        "template": {"runtime": "process", "executable": "/bin/sleep", "command": ["3600"]},
    },
}
created = objects.create_namespaced_custom_object(GROUP, VERSION, "default", "services", service)
seen["created_uid"] = bool(created["metadata"].get("uid"))

# A dry run changes nothing.
objects.patch_namespaced_custom_object(
    GROUP, VERSION, "default", "services", "py-web", {"spec": {"replicas": 5}}, dry_run="All"
)
got = objects.get_namespaced_custom_object(GROUP, VERSION, "default", "services", "py-web")
seen["replicas_after_dry_run"] = got["spec"]["replicas"]
seen["same_version_after_dry_run"] = got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]

patched = objects.patch_namespaced_custom_object(
    GROUP, VERSION, "default", "services", "py-web", {"spec": {"replicas": 3}}
)
seen["replicas_after_patch"] = patched["spec"]["replicas"]

listed = objects.list_namespaced_custom_object(
    GROUP, VERSION, "default", "services", label_selector="from=python"
)
seen["listed"] = [item["metadata"]["name"] for item in listed["items"]]
seen["namespaces"] = sorted(ns.metadata.name for ns in core.list_namespace().items)

# A watch from the list's version sees the change made after it.
stream = watch.Watch().stream(
    objects.list_namespaced_custom_object,
    GROUP,
    VERSION,
    "default",
    "services",
    resource_version=listed["metadata"]["resourceVersion"],
    timeout_seconds=10,
)
objects.patch_namespaced_custom_object(
    GROUP, VERSION, "default", "services", "py-web", {"metadata": {"labels": {"seen": "yes"}}}
)
for event in stream:
    if event["object"]["metadata"].get("labels", {}).get("seen") == "yes":
        seen["watched"] = event["type"]
        break

# Without credentials: 401, with Kubernetes' Status.
anonymous = client.Configuration.get_default_copy()
anonymous.cert_file = None
anonymous.key_file = None
try:
    client.CustomObjectsApi(client.ApiClient(anonymous)).list_namespaced_custom_object(
        GROUP, VERSION, "default", "services"
    )
    seen["anonymous"] = 200
except ApiException as e:
    seen["anonymous"] = e.status
    seen["anonymous_reason"] = json.loads(e.body)["reason"]

objects.delete_namespaced_custom_object(GROUP, VERSION, "default", "services", "py-web")
try:
    objects.get_namespaced_custom_object(GROUP, VERSION, "default", "services", "py-web")
    seen["after_delete"] = 200
except ApiException as e:
    seen["after_delete"] = e.status

print(json.dumps(seen))
