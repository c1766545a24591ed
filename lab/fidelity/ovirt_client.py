"""Point ovirt-engine-sdk-python at the lab's oVirt simulator.

Usage: ovirt_client.py API_URL USER PASSWORD CA_FILE

Fetches the engine's CA from its pki-resource as clients bootstrap trust
(and checks it is CA_FILE), checks that a client without the CA is refused
the engine's certificate and that a wrong password is refused, connects over
HTTPS with the CA (SSO password grant),
reads the product info, lists and searches VMs and their disk attachments,
creates a snapshot with a correlation id and waits for it (and its job), downloads a
disk of the snapshot through an image transfer (imageio: OPTIONS, extents,
ranged GET), starts an incremental backup from a full one's checkpoint and
reads its dirty extents, and stops a VM. Exits non-zero with the reason on
any mismatch.
"""

import json
import ssl
import sys
import time
import urllib.request

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

url, user, password, ca_file = sys.argv[1:5]
tls = ssl.create_default_context(cafile=ca_file)


def wait(what, get, done, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = get()
        if done(value):
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


base = url.split("/ovirt-engine")[0]
pki = base + "/ovirt-engine/services/pki-resource?resource=ca-certificate&format=X509-PEM-CA"
fetched = urllib.request.urlopen(pki, context=ssl._create_unverified_context()).read().decode()
with open(ca_file) as f:
    assert fetched.strip() == f.read().strip(), "the pki-resource CA is not the engine's"

try:
    sdk.Connection(url=url, username=user, password=password).test(raise_exception=True)
    raise AssertionError("the engine's certificate was trusted without its CA")
except sdk.Error as e:
    assert "certificate" in str(e).lower() or "ssl" in str(e).lower(), e

try:
    sdk.Connection(url=url, username=user, password="wrong", ca_file=ca_file).test(raise_exception=True)
    raise AssertionError("a wrong password was accepted")
except sdk.AuthError as e:
    assert "access_denied" in str(e), e

connection = sdk.Connection(url=url, username=user, password=password, ca_file=ca_file)
system = connection.system_service()
info = system.get().product_info
assert info.name == "oVirt Engine" and info.version.major == 4, info.version.major

vms_service = system.vms_service()
vms = vms_service.list()
assert sorted(vm.name for vm in vms) == ["db-1", "web-1"], [vm.name for vm in vms]
assert all(vm.status == types.VmStatus.UP for vm in vms), [vm.status for vm in vms]
db = vms_service.list(search="name=db-1")
assert [vm.name for vm in db] == ["db-1"], db
db = db[0]
assert db.memory == 4 << 30 and db.cpu.topology.sockets == 2, (db.memory, db.cpu.topology.sockets)
vm_service = vms_service.vm_service(db.id)
attachments = vm_service.disk_attachments_service().list()
assert len(attachments) == 2 and attachments[0].bootable, attachments
disks_service = system.disks_service()
first = disks_service.disk_service(attachments[0].disk.id).get()
assert first.provisioned_size > 0 and first.status == types.DiskStatus.OK, first.status
nics = vm_service.nics_service().list()
profile = connection.follow_link(nics[0].vnic_profile)
assert profile.name == "ovirtmgmt", profile.name

# A snapshot, followed by its job's correlation id.
snapshots_service = vm_service.snapshots_service()
snap = snapshots_service.add(
    types.Snapshot(description="fidelity", persist_memorystate=False),
    query={"correlation_id": "fidelity-snap"},
)
assert snap.snapshot_status == types.SnapshotStatus.LOCKED, snap.snapshot_status
snap_service = snapshots_service.snapshot_service(snap.id)
wait("snapshot ok", snap_service.get, lambda s: s.snapshot_status == types.SnapshotStatus.OK)
jobs = system.jobs_service().list(search="correlation_id=fidelity-snap")
assert len(jobs) == 1, jobs
wait("job finished", lambda: system.jobs_service().job_service(jobs[0].id).get(),
     lambda j: j.status == types.JobStatus.FINISHED)
listed = snapshots_service.list()
assert [s.snapshot_type for s in listed][0] == types.SnapshotType.ACTIVE, listed
print("snapshot waited to ok")

# Download the snapshot's first disk through an image transfer.
snap_disks = snap_service.disks_service().list()
assert len(snap_disks) == 2, snap_disks
transfers = system.image_transfers_service()
transfer = transfers.add(types.ImageTransfer(
    snapshot=types.DiskSnapshot(id=snap_disks[0].image_id),
    direction=types.ImageTransferDirection.DOWNLOAD,
    format=types.DiskFormat.RAW,
))
transfer_service = transfers.image_transfer_service(transfer.id)
transfer = wait("transferring", transfer_service.get,
                lambda t: t.phase == types.ImageTransferPhase.TRANSFERRING)
req = urllib.request.Request(transfer.transfer_url, method="OPTIONS")
options = json.load(urllib.request.urlopen(req, context=tls))
assert "extents" in options["features"], options
extents = json.load(urllib.request.urlopen(transfer.transfer_url + "/extents?context=zero", context=tls))
assert extents[0]["start"] == 0 and not extents[0]["zero"], extents[0]
assert sum(e["length"] for e in extents) == first.provisioned_size, extents
req = urllib.request.Request(transfer.transfer_url, headers={"Range": "bytes=0-4095"})
data = urllib.request.urlopen(req, context=tls).read()
assert data.startswith(b"db-1 disk 0") and len(data) == 4096, data[:20]
transfer_service.finalize()
wait("finished", transfer_service.get,
     lambda t: t.phase == types.ImageTransferPhase.FINISHED_SUCCESS)
print("disk downloaded through an image transfer")

# A full backup seeds a checkpoint; an incremental one reads dirty extents.
backups = vm_service.backups_service()
disk_ref = [types.Disk(id=first.id)]
full = backups.add(types.Backup(disks=disk_ref))
full_service = backups.backup_service(full.id)
full = wait("full backup ready", full_service.get, lambda b: b.phase == types.BackupPhase.READY)
checkpoint = full.to_checkpoint_id
assert checkpoint, full
full_service.finalize()
wait("full backup succeeded", full_service.get, lambda b: b.phase == types.BackupPhase.SUCCEEDED)
sys.stdout.flush()
print("CHECKPOINT", checkpoint, first.id, flush=True)
sys.stdin.readline()  # the test writes into the disk meanwhile
incremental = backups.add(types.Backup(disks=disk_ref, from_checkpoint_id=checkpoint))
inc_service = backups.backup_service(incremental.id)
wait("incremental backup ready", inc_service.get, lambda b: b.phase == types.BackupPhase.READY)
transfer = transfers.add(types.ImageTransfer(
    disk=types.Disk(id=first.id), backup=types.Backup(id=incremental.id),
    direction=types.ImageTransferDirection.DOWNLOAD, format=types.DiskFormat.RAW,
))
transfer_service = transfers.image_transfer_service(transfer.id)
transfer = wait("transferring", transfer_service.get,
                lambda t: t.phase == types.ImageTransferPhase.TRANSFERRING)
dirty = json.load(urllib.request.urlopen(transfer.transfer_url + "/extents?context=dirty", context=tls))
changed = [(e["start"], e["length"]) for e in dirty if e["dirty"]]
print("DIRTY", json.dumps(changed))
transfer_service.finalize()
inc_service.finalize()
wait("incremental backup succeeded", inc_service.get,
     lambda b: b.phase == types.BackupPhase.SUCCEEDED)

# The storage domain lists the snapshot's disk images with their disks.
domain = system.storage_domains_service().list()[0]
domain_service = system.storage_domains_service().storage_domain_service(domain.id)
images = domain_service.disk_snapshots_service().list()
image = [i for i in images if i.id == snap_disks[0].image_id]
assert len(image) == 1 and image[0].disk.id == first.id, images

# Incremental backup needs a qcow2 disk: a raw one is refused, a cow one
# shows it enabled.
size = 1 << 20
try:
    disks_service.add(types.Disk(name="raw-inc", provisioned_size=size,
                                 format=types.DiskFormat.RAW, backup=types.DiskBackup.INCREMENTAL,
                                 storage_domains=[types.StorageDomain(id=domain.id)]))
    raise AssertionError("a raw disk with incremental backup was accepted")
except sdk.Error as e:
    assert e.code == 400 and "COW" in str(e), e
cow = disks_service.add(types.Disk(name="cow-inc", provisioned_size=size,
                                   format=types.DiskFormat.COW, backup=types.DiskBackup.INCREMENTAL,
                                   storage_domains=[types.StorageDomain(id=domain.id)]))
assert cow.format == types.DiskFormat.COW and cow.backup == types.DiskBackup.INCREMENTAL, cow
assert first.format == types.DiskFormat.COW and first.backup == types.DiskBackup.INCREMENTAL, first
print("incremental backup needs a qcow2 disk")

# A disk copy is refused while its VM runs.
first_service = disks_service.disk_service(first.id)
copy_to = types.StorageDomain(id=domain.id)
try:
    first_service.copy(storage_domain=copy_to, disk=types.Disk(name="db-1-copy"))
    raise AssertionError("copying a running VM's disk was accepted")
except sdk.Error as e:
    assert e.code == 409 and "must be down" in str(e), e

# Power: stop, and see it go down.
vm_service.stop()
wait("down", vm_service.get, lambda v: v.status == types.VmStatus.DOWN)

# Then the disk is copied: a new disk, locked until the copy is done,
# holding the same data.
first_service.copy(storage_domain=copy_to, disk=types.Disk(name="db-1-copy"))
found = disks_service.list(search="name=db-1-copy")
assert len(found) == 1 and found[0].id != first.id, found
copied = wait("copy ok", disks_service.disk_service(found[0].id).get,
              lambda d: d.status == types.DiskStatus.OK)
assert copied.provisioned_size == first.provisioned_size, copied
transfer = transfers.add(types.ImageTransfer(
    disk=types.Disk(id=copied.id),
    direction=types.ImageTransferDirection.DOWNLOAD,
    format=types.DiskFormat.RAW,
))
transfer_service = transfers.image_transfer_service(transfer.id)
transfer = wait("transferring", transfer_service.get,
                lambda t: t.phase == types.ImageTransferPhase.TRANSFERRING)
req = urllib.request.Request(transfer.transfer_url, headers={"Range": "bytes=0-4095"})
assert urllib.request.urlopen(req, context=tls).read().startswith(b"db-1 disk 0")
transfer_service.finalize()
print("disk copied")
try:
    vm_service.stop()
    raise AssertionError("stopping a stopped VM was accepted")
except sdk.Error as e:
    assert e.code == 409 and "not running" in str(e), e
connection.close(logout=True)
print("fidelity: all checks passed")
