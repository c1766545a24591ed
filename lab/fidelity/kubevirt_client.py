"""Point the real Kubernetes Python client at the lab's KubeVirt simulator.

Usage: kubevirt_client.py URL TOKEN CA_FILE

Authenticates with a bearer token over HTTPS trusting the cluster's own CA,
lists namespaces and VirtualMachines, creates a VirtualMachineSnapshot and
watches it until it is ready to use, stops a VM through its subresource and
sees its instance go, and checks the refusals (a wrong token, a name that
exists). Exits non-zero with the reason on any mismatch.
"""

import sys

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

url, token, ca = sys.argv[1:4]


def api_client(bearer):
    cfg = client.Configuration()
    cfg.host = url
    cfg.ssl_ca_cert = ca
    cfg.api_key = {"authorization": "Bearer " + bearer}
    return client.ApiClient(cfg)


api = api_client(token)
core = client.CoreV1Api(api)
custom = client.CustomObjectsApi(api)

namespaces = sorted(n.metadata.name for n in core.list_namespace().items)
assert "prod" in namespaces, namespaces

vms = custom.list_namespaced_custom_object("kubevirt.io", "v1", "prod", "virtualmachines")
names = sorted(vm["metadata"]["name"] for vm in vms["items"])
assert names == ["db-1", "web-1"], names
for vm in vms["items"]:
    meta = vm["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"], meta
    assert vm["status"]["printableStatus"] == "Running", vm["status"]
web = custom.list_namespaced_custom_object(
    "kubevirt.io", "v1", "prod", "virtualmachines", label_selector="tier=web"
)["items"]
assert [vm["metadata"]["name"] for vm in web] == ["web-1"], web

snapshot = {
    "apiVersion": "snapshot.kubevirt.io/v1beta1",
    "kind": "VirtualMachineSnapshot",
    "metadata": {"name": "web-1-snap"},
    "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "web-1"}},
}
created = custom.create_namespaced_custom_object(
    "snapshot.kubevirt.io", "v1beta1", "prod", "virtualmachinesnapshots", snapshot
)
assert created["status"]["readyToUse"] is False, created["status"]

ready = None
w = watch.Watch()
for event in w.stream(
    custom.list_namespaced_custom_object,
    "snapshot.kubevirt.io",
    "v1beta1",
    "prod",
    "virtualmachinesnapshots",
    field_selector="metadata.name=web-1-snap",
    timeout_seconds=20,
):
    status = event["object"].get("status", {})
    if status.get("readyToUse"):
        ready = event["object"]
        w.stop()
assert ready is not None, "the snapshot never became ready"
assert ready["status"]["phase"] == "Succeeded", ready["status"]
assert ready["status"]["virtualMachineSnapshotContentName"], ready["status"]
got = custom.get_namespaced_custom_object(
    "snapshot.kubevirt.io", "v1beta1", "prod", "virtualmachinesnapshots", "web-1-snap"
)
assert got["status"]["readyToUse"] is True

try:
    custom.create_namespaced_custom_object(
        "snapshot.kubevirt.io", "v1beta1", "prod", "virtualmachinesnapshots", snapshot
    )
    raise AssertionError("a second snapshot under the same name was accepted")
except ApiException as e:
    assert e.status == 409, e.status

stopped = api.call_api(
    "PUT",
    url + "/apis/subresources.kubevirt.io/v1/namespaces/prod/virtualmachines/web-1/stop",
    header_params={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    body={},
)
assert stopped.status == 202, stopped.status
vm = custom.get_namespaced_custom_object("kubevirt.io", "v1", "prod", "virtualmachines", "web-1")
assert vm["status"]["printableStatus"] == "Stopped", vm["status"]
try:
    custom.get_namespaced_custom_object(
        "kubevirt.io", "v1", "prod", "virtualmachineinstances", "web-1"
    )
    raise AssertionError("a stopped VM kept its instance")
except ApiException as e:
    assert e.status == 404, e.status

try:
    client.CoreV1Api(api_client("wrong")).list_namespace()
    raise AssertionError("a wrong token was accepted")
except ApiException as e:
    assert e.status == 401, e.status

print("kubernetes client: namespaces, VMs, snapshot watched to ready, stop, refusals: ok")
