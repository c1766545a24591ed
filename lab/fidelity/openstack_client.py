"""Fidelity check: the real openstacksdk against Rebound's OpenStack simulator.

Run by lab/tests/openstack_fidelity_test.rs, which starts the simulator and
passes its address in the environment (not as OS_* variables, which
openstacksdk would read as a cloud of their own with a single region):

    LAB_OS_AUTH_URL, LAB_OS_USERNAME, LAB_OS_PASSWORD, LAB_OS_PROJECT_NAME,
    LAB_OS_REGION, LAB_OS_SECOND_REGION, and LAB_OS_CACERT (the site's CA
    file) when it serves HTTPS

Each step prints one line; any failure raises and exits non-zero.
LAB_OS_DEBUG=1 logs every HTTP request and response to stderr.
"""

import os
import sys

import openstack


def step(message):
    print(f"fidelity: {message}", flush=True)


def connect(region):
    return openstack.connect(
        auth_url=os.environ["LAB_OS_AUTH_URL"],
        username=os.environ["LAB_OS_USERNAME"],
        password=os.environ["LAB_OS_PASSWORD"],
        project_name=os.environ["LAB_OS_PROJECT_NAME"],
        user_domain_name="Default",
        project_domain_name="Default",
        region_name=region,
        identity_interface="public",
        cacert=os.environ.get("LAB_OS_CACERT"),
    )


def main():
    if os.environ.get("LAB_OS_DEBUG") == "1":
        openstack.enable_logging(debug=True, http_debug=True)
    conn = connect(os.environ["LAB_OS_REGION"])

    # Keystone: password auth, a project-scoped token with a catalog.
    token = conn.authorize()
    assert token, "no token"
    step(f"authenticated, token {token[:12]}…")

    # Nova and Cinder inventory (microversions negotiated from discovery).
    servers = {s.name: s for s in conn.compute.servers()}
    assert {"web-1", "db-1"} <= set(servers), f"servers: {sorted(servers)}"
    web, db = servers["web-1"], servers["db-1"]
    assert web.status == "ACTIVE", web.status
    attached = [a["id"] for a in web.attached_volumes]
    assert len(attached) == 1, web.attached_volumes
    step(f"servers: {sorted(servers)}; web-1 boots from volume {attached[0]}")

    volumes = {v.id: v for v in conn.block_storage.volumes()}
    assert attached[0] in volumes, f"volume {attached[0]} not listed"
    root = volumes[attached[0]]
    assert root.status == "in-use" and root.size == 1, (root.status, root.size)
    assert root.attachments[0]["server_id"] == web.id, root.attachments
    step(f"volumes: {len(volumes)}; web-1's root is {root.size} GiB, {root.status}")

    # Cinder: a snapshot of an in-use volume, waited for.
    snap = conn.block_storage.create_snapshot(
        volume_id=root.id, name="fidelity-snap", force=True
    )
    assert snap.status == "creating", snap.status
    snap = conn.block_storage.wait_for_status(
        snap, status="available", failures=["error"], interval=0.2, wait=30
    )
    assert snap.size == root.size and snap.volume_id == root.id
    step(f"snapshot {snap.id} is {snap.status}")

    # Cinder group snapshot: both servers' volumes captured together.
    group_type = next(conn.block_storage.group_types())
    group = conn.block_storage.create_group(
        name="shop", group_type=group_type.id, volume_types=["lvmdriver-1"]
    )
    group = conn.block_storage.wait_for_status(
        group, status="available", failures=["error"], interval=0.2, wait=30
    )
    conn.block_storage.update_group(group, add_volumes=",".join(volumes))
    group_snap = conn.block_storage.create_group_snapshot(
        group_id=group.id, name="shop-consistent"
    )
    group_snap = conn.block_storage.wait_for_status(
        conn.block_storage.get_group_snapshot(group_snap.id),
        status="available",
        failures=["error"],
        interval=0.2,
        wait=30,
    )
    members = [
        s for s in conn.block_storage.snapshots() if s.group_snapshot_id == group_snap.id
    ]
    assert sorted(s.volume_id for s in members) == sorted(volumes), members
    step(f"group snapshot {group_snap.id} holds {len(members)} volume snapshots")

    # Neutron: move the floating IP from web-1's port to db-1's port.
    web_port = next(conn.network.ports(device_id=web.id))
    db_port = next(conn.network.ports(device_id=db.id))
    fip = next(ip for ip in conn.network.ips() if ip.port_id == web_port.id)
    fip = conn.network.update_ip(fip, port_id=db_port.id)
    assert fip.port_id == db_port.id, fip.port_id
    assert fip.fixed_ip_address == db_port.fixed_ips[0]["ip_address"]
    moved = conn.compute.get_server(db.id)
    floating = [
        a["addr"]
        for addrs in moved.addresses.values()
        for a in addrs
        if a.get("OS-EXT-IPS:type") == "floating"
    ]
    assert floating == [fip.floating_ip_address], moved.addresses
    step(f"floating IP {fip.floating_ip_address} moved to db-1")

    # Designate: a recordset in the seeded zone, PENDING then ACTIVE.
    zone = next(conn.dns.zones(name="example.org."))
    rs = conn.dns.create_recordset(
        zone, name="dr.example.org.", type="A", records=[fip.floating_ip_address], ttl=60
    )
    assert rs.status == "PENDING", rs.status
    rs = conn.dns.wait_for_status(rs, status="ACTIVE", interval=0.2, wait=30)
    names = [r.name for r in conn.dns.recordsets(zone)]
    assert "dr.example.org." in names, names
    step(f"recordset {rs.name} is {rs.status}")

    # A second region is in the catalog and has its own state.
    other = connect(os.environ["LAB_OS_SECOND_REGION"])
    assert list(other.compute.servers()) == []
    spare = list(other.network.ips())
    assert len(spare) == 1 and spare[0].port_id is None, spare
    step(f"region {os.environ['LAB_OS_SECOND_REGION']}: no servers, one spare floating IP")

    # Cinder backups: export a record in one region, import and restore it
    # in the other. openstacksdk 4.22's Backup.import_record posts to the
    # wrong path, so the import is a plain call on the SDK's session.
    backup = conn.block_storage.create_backup(
        volume_id=root.id, name="fidelity-backup", force=True
    )
    backup = conn.block_storage.wait_for_status(
        backup, status="available", failures=["error"], interval=0.2, wait=30
    )
    record = backup.export_record(conn.block_storage)
    response = other.block_storage.post(
        "/backups/import_record", json=record, microversion="3.64"
    )
    assert response.status_code == 201, (response.status_code, response.text)
    imported = other.block_storage.wait_for_status(
        other.block_storage.get_backup(backup.id),
        status="available",
        failures=["error"],
        interval=0.2,
        wait=30,
    )
    restored = other.block_storage.restore_backup(imported, name="web-1-root-dr")
    volume = other.block_storage.wait_for_status(
        other.block_storage.get_volume(restored.volume_id),
        status="available",
        failures=["error_restoring", "error"],
        interval=0.2,
        wait=30,
    )
    assert volume.name == "web-1-root-dr" and volume.size == root.size
    step(f"backup {backup.id} restored in {os.environ['LAB_OS_SECOND_REGION']}")

    # Glance: upload, then download (the SDK checks the data's hash).
    data = b"rebound" + bytes(100_000) + b"image"
    image = conn.image.create_image(
        "fidelity-image",
        data=data,
        disk_format="raw",
        container_format="bare",
    )
    # The SDK returns the record it created; the upload has finished since.
    image = conn.image.get_image(image.id)
    assert image.status == "active" and image.size == len(data), image
    downloaded = conn.image.download_image(image)
    assert downloaded.content == data
    step(f"image {image.id} uploaded and downloaded, {image.hash_algo} verified")

    # Octavia: shift the pool's weight to the standby member.
    pool = next(conn.load_balancer.pools())
    standby = next(
        m for m in conn.load_balancer.members(pool) if m.name == "web-1-standby"
    )
    member = conn.load_balancer.update_member(standby, pool, weight=100)
    assert member.provisioning_status == "PENDING_UPDATE", member.provisioning_status
    lb = conn.load_balancer.wait_for_load_balancer(
        pool.loadbalancers[0]["id"], interval=0.2, wait=30
    )
    assert conn.load_balancer.get_member(standby, pool).weight == 100
    step(f"member web-1-standby weighs 100 behind {lb.name}")

    step("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
