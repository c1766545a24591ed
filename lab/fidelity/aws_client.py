"""boto3 against the lab's AWS site (moto behind the lab's front).

Usage: aws_client.py ENDPOINT ACCESS_KEY SECRET REGION_A REGION_B
Prints one line per check; exits non-zero on the first failure.
"""
import sys

import boto3
import botocore.exceptions
from botocore.config import Config

endpoint, key, secret, region_a, region_b = sys.argv[1:6]
config = Config(retries={"max_attempts": 2})


def client(service, region, secret=secret):
    return boto3.client(service, endpoint_url=endpoint, region_name=region,
                        aws_access_key_id=key, aws_secret_access_key=secret, config=config)


ec2 = client("ec2", region_a)
instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
names = sorted(t["Value"] for i in instances for t in i.get("Tags", []) if t["Key"] == "Name")
assert names == ["db-1", "web-1"], names
print("describe_instances:", names)

web = next(i for i in instances if {"Key": "Name", "Value": "web-1"} in i["Tags"])
volume = web["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
snap = ec2.create_snapshot(VolumeId=volume, Description="fidelity")
assert snap["State"] == "pending", snap["State"]
ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap["SnapshotId"]],
                                           WaiterConfig={"Delay": 1, "MaxAttempts": 30})
print("snapshot completed:", snap["SnapshotId"])

west = client("ec2", region_b)
copy = west.copy_snapshot(SourceRegion=region_a, SourceSnapshotId=snap["SnapshotId"])
state = west.describe_snapshots(SnapshotIds=[copy["SnapshotId"]])["Snapshots"][0]["State"]
assert state == "pending", state
west.get_waiter("snapshot_completed").wait(SnapshotIds=[copy["SnapshotId"]],
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 30})
print("copy completed in", region_b, copy["SnapshotId"])

ebs = client("ebs", region_b)
blocks = ebs.list_snapshot_blocks(SnapshotId=copy["SnapshotId"])
assert blocks["BlockSize"] == 524288 and blocks["Blocks"], blocks
first = blocks["Blocks"][0]
block = ebs.get_snapshot_block(SnapshotId=copy["SnapshotId"], BlockIndex=first["BlockIndex"],
                               BlockToken=first["BlockToken"])
data = block["BlockData"].read()
assert data.startswith(b"web-1 disk 0 in " + region_a.encode()), data[:40]
print("ebs direct: %d blocks, block %d read (%d bytes)" % (len(blocks["Blocks"]), first["BlockIndex"], len(data)))
changed = ebs.list_changed_blocks(FirstSnapshotId=copy["SnapshotId"], SecondSnapshotId=copy["SnapshotId"])
assert changed["ChangedBlocks"] == [], changed
print("list_changed_blocks of a snapshot with itself: none")

r53 = client("route53", "us-east-1")
zone = r53.list_hosted_zones()["HostedZones"][0]
change = r53.change_resource_record_sets(HostedZoneId=zone["Id"], ChangeBatch={"Changes": [{
    "Action": "UPSERT", "ResourceRecordSet": {
        "Name": "www." + zone["Name"], "Type": "A", "SetIdentifier": "dr", "Weight": 0, "TTL": 60,
        "ResourceRecords": [{"Value": "10.1.2.3"}]}}]})
assert change["ChangeInfo"]["Status"] == "PENDING", change["ChangeInfo"]
r53.get_waiter("resource_record_sets_changed").wait(Id=change["ChangeInfo"]["Id"],
                                                      WaiterConfig={"Delay": 1, "MaxAttempts": 30})
sets = r53.list_resource_record_sets(HostedZoneId=zone["Id"])["ResourceRecordSets"]
assert any(s.get("SetIdentifier") == "dr" and s.get("Weight") == 0 for s in sets), sets
print("route53 weighted upsert INSYNC")

try:
    client("ec2", region_a, secret="wrong").describe_instances()
    raise SystemExit("a wrong secret was accepted")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "AuthFailure", e.response
    print("wrong secret refused:", e.response["Error"]["Code"])
print("ok")
