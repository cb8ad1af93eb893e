"""Consul's catalog, health and agent reads and Prometheus' HTTP SD, over HTTP and with
py-consul: the shapes clients decode, what each token sees, filters, the per-endpoint
index of blocking queries, and writes refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import consul
import consul.exceptions
import httpx
import pytest

from tests.support.servers import HEADERS, OPERATOR_TOKEN, ZK1, ServerProcess, example_server

pytestmark = pytest.mark.timeout(60)

S4, WEB, API = "s4--test1--5", "web--shop--7", "api--shop--7"
WEB1 = "3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with example_server(tmp_path_factory.mktemp("catalog") / "metafs.db", "--datacenter", "eu-1") as s:
        yield s


def token(srv: ServerProcess, kind: str, subject: str = "") -> str:
    r = httpx.post(srv.url + "/v1/tokens/", json={"kind": kind, "subject": subject}, headers=HEADERS)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def client(srv: ServerProcess, tok: str = OPERATOR_TOKEN) -> consul.Consul:
    c = consul.Consul(host="127.0.0.1", port=srv.port, token=tok, dc="eu-1")
    # py-consul sends no token with agent.self() and agent.members() (a Consul with ACLs
    # refuses them too): on its session, every call carries it
    c.http.session.headers["X-Consul-Token"] = tok
    return c


def test_py_consul_reads_the_catalog(srv: ServerProcess) -> None:
    c = client(srv)
    me = c.agent.self()
    assert me["Config"]["Datacenter"] == "eu-1" and isinstance(me["Config"]["NodeName"], str)
    assert all(isinstance(v, dict) for v in me.values())
    assert [m["Name"] for m in c.agent.members()] == ["node-a", "node-b", "node-c"]
    assert c.catalog.datacenters() == ["eu-1"]
    index, services = c.catalog.services()
    assert int(index) >= 1
    assert services == {
        API: [],
        S4: ["io.example/role=zk", "io.example/zone=a", "io.example/zone=b", "io.example/zone=c"],
        WEB: ["io.example/role=http"],
    }
    _, entries = c.health.service(S4, passing=True)
    assert [e["Service"]["ID"] for e in entries] == sorted(e["Service"]["ID"] for e in entries)
    first = entries[0]
    assert first["Node"] == {
        "ID": "",
        "Node": "node-a",
        "Address": "10.0.0.1",
        "Datacenter": "eu-1",
        "TaggedAddresses": {"lan": "10.0.0.1", "wan": "10.0.0.1"},
        "Meta": {"disk": "ssd", "zone": "a"},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    }
    svc = first["Service"]
    assert (svc["ID"], svc["Service"], svc["Address"], svc["Port"]) == (ZK1, S4, "10.42.0.5", 2181)
    assert svc["Meta"] == {
        "io.example/zone": "a",
        "cardinal_value": "1",
        "hostname": "s4-1",
        "deployment_unit_id": f"5/test1/s4/{ZK1}",
        "account": "5",
        "stack": "test1",
        "service": "s4",
    }
    assert svc["Tags"] == ["io.example/role=zk", "io.example/zone=a"]
    assert [(ch["Status"], ch["ServiceID"]) for ch in first["Checks"]] == [("passing", ZK1)]
    _, flat = c.catalog.service(S4)
    assert [(e["Node"], e["ServiceID"], e["ServicePort"]) for e in flat] == [
        ("node-a", ZK1, 2181),
        ("node-b", "f58ce48e-a4d5-4c1b-905f-ee3b15ccf117", 2181),
        ("node-c", "f58ce48e-a4d5-4c1b-905f-ee3b15ccf118", 2181),
    ]
    _, nodes = c.catalog.nodes()
    assert [n["Node"] for n in nodes] == ["node-a", "node-b", "node-c"]
    _, node = c.catalog.node("node-a")
    assert node["Node"]["Address"] == "10.0.0.1" and ZK1 in node["Services"]
    assert c.catalog.node("node-zz")[1] is None
    _, checks = c.health.checks(WEB)
    assert len(checks) == 5 and {ch["ServiceName"] for ch in checks} == {WEB}
    _, on_b = c.health.node("node-b")
    assert {ch["ServiceName"] for ch in on_b} == {S4, WEB}
    assert len(c.health.state("any")[1]) == 9 and c.health.state("critical")[1] == []
    assert c.health.service("no-such-service")[1] == []


def test_filters_and_the_parameters_clients_send(srv: ServerProcess) -> None:
    c = client(srv)
    _, zone_a = c.health.service(S4, tag="IO.EXAMPLE/ZONE=A")  # any case
    assert [e["Service"]["ID"] for e in zone_a] == [ZK1]
    with httpx.Client(base_url=srv.url, headers=HEADERS) as h:
        both = h.get(
            f"/v1/health/service/{S4}", params=[("tag", "io.example/role=zk"), ("tag", "io.example/zone=b")]
        )
        assert [e["Node"]["Node"] for e in both.json()] == ["node-b"]
        ssd = h.get("/v1/catalog/nodes", params=[("node-meta", "disk:ssd"), ("node-meta", "zone:b")])
        assert [n["Node"] for n in ssd.json()] == ["node-b"]
        quiet = h.get(
            f"/v1/health/service/{S4}",
            params={
                "stale": "",
                "consistent": "",
                "cached": "",
                "ns": "default",
                "partition": "default",
                "near": "_agent",
                "dc": "eu-1",
                "passing": "1",
            },
        )
        assert quiet.status_code == 200 and len(quiet.json()) == 3
        for params, why in (
            ({"filter": "Service.Port == 80"}, "filter"),
            ({"dc": "us-2"}, "datacenter 'eu-1'"),
            ({"node-meta": "nocolon"}, "key:value"),
            ({"bogus": "1"}, "unknown query parameter 'bogus'"),
        ):
            r = h.get("/v1/catalog/services", params=params)
            assert r.status_code == 400 and why in r.text, (params, r.text)
        assert h.get("/v1/health/state/sideways").status_code == 400
        assert h.get("/v1/catalog/nope").status_code == 404
        for method, path in (
            ("PUT", "/v1/agent/service/register"),
            ("PUT", "/v1/catalog/register"),
            ("PUT", "/v1/catalog/deregister"),
            ("PUT", "/v1/agent/check/pass/service:x"),
        ):
            r = h.request(method, path, json={"Name": "x"})
            assert r.status_code == 405 and "written through metafs's own API" in r.text, r.text
    with pytest.raises(consul.exceptions.ConsulException):
        c.agent.service.register("x")


def test_each_token_sees_what_it_may_read(srv: ServerProcess) -> None:
    unit = client(srv, token(srv, "unit", ZK1))
    assert unit.catalog.services()[1] == {
        S4: ["io.example/role=zk", "io.example/zone=a", "io.example/zone=b", "io.example/zone=c"]
    }
    assert len(unit.health.service(S4)[1]) == 3  # its peers, as all_hosts/ shows them
    assert unit.health.service(WEB)[1] == []
    assert [n["Node"] for n in unit.catalog.nodes()[1]] == ["node-a", "node-b", "node-c"]
    assert len(unit.health.state("any")[1]) == 3
    host = client(srv, token(srv, "host", "node-c"))
    assert set(host.catalog.services()[1]) == {S4, WEB, API}
    account = client(srv, token(srv, "reader", "7"))
    assert set(account.catalog.services()[1]) == {WEB, API}
    assert account.catalog.node("node-a")[1]["Services"].keys() == {WEB1, WEB1.replace("0001", "0004")}
    assert account.catalog.node("node-c")[1] is not None
    reader = client(srv, token(srv, "reader"))
    assert set(reader.catalog.services()[1]) == {S4, WEB, API}
    with httpx.Client(base_url=srv.url) as h:
        assert h.get("/v1/catalog/services").status_code == 403  # no token, no header
        bad = h.get("/v1/catalog/services", headers={"X-Consul-Token": "mfs_nope"})
        assert bad.status_code == 401


def test_prometheus_targets_with_nothing_but_a_bearer_token(srv: ServerProcess) -> None:
    bearer = {"Authorization": f"Bearer {token(srv, 'reader')}"}
    r = httpx.get(srv.url + "/v1/prometheus/targets", headers=bearer)
    # Prometheus takes application/json, with or without charset=utf-8
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    groups = {g["labels"]["__meta_metafs_unit_id"]: g for g in r.json()}
    assert len(groups) == 9
    assert groups[ZK1] == {
        "targets": ["10.42.0.5:2181"],
        "labels": {
            "__meta_metafs_unit_id": ZK1,
            "__meta_metafs_account": "5",
            "__meta_metafs_stack": "test1",
            "__meta_metafs_service": "s4",
            "__meta_metafs_host": "node-a",
            "__meta_metafs_hostname": "s4-1",
            "__meta_metafs_cardinal_value": "1",
            "__meta_metafs_host_address": "10.0.0.1",
            "__meta_metafs_service_label_io_example_role": "zk",
            "__meta_metafs_label_io_example_zone": "a",
        },
    }
    again = httpx.get(
        srv.url + "/v1/prometheus/targets", headers={**bearer, "If-None-Match": r.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    assert httpx.get(srv.url + "/v1/prometheus/targets").status_code == 403  # no token at all
    # a token alone in Authorization: what Prometheus sends without `type: Bearer`
    # (prometheus/docs#2377); on this route only
    bare = {"Authorization": bearer["Authorization"].split()[1]}
    assert httpx.get(srv.url + "/v1/prometheus/targets", headers=bare).json() == r.json()
    assert httpx.get(srv.url + "/v1/catalog/services", headers=bare).status_code == 403
    assert httpx.get(srv.url + "/v1/catalog/services", headers=bearer).status_code == 403  # the header
    unit = httpx.get(
        srv.url + "/v1/prometheus/targets", headers={"Authorization": f"Bearer {token(srv, 'unit', ZK1)}"}
    )
    assert sorted(g["targets"][0] for g in unit.json()) == [
        "10.42.0.5:2181",
        "10.42.0.6:2181",
        "10.42.0.7:2181",
    ]


def test_the_port_to_scrape_and_units_without_an_address(srv: ServerProcess) -> None:
    """``prometheus.io/port`` of the service picks the port, a unit's own wins; a unit
    with no address is no target; a unit with no port is its address alone."""
    units = {
        "p-1": {"cardinal_value": 1, "hostname": "p1", "virt_ip_address": "10.9.0.1", "ports": ["80/tcp"]},
        "p-2": {
            "cardinal_value": 2,
            "hostname": "p2",
            "virt_ip_address": "10.9.0.2",
            "ports": ["8080:80/tcp"],
            "labels": {"prometheus.io/port": "9200"},
        },
        "p-3": {"cardinal_value": 3, "hostname": "p3"},
    }
    svc = {"labels": {"prometheus.io/port": 9100}, "units": units}
    doc = {
        "accounts": {
            "9": {
                "stacks": {
                    "m": {
                        "services": {
                            "metrics": svc,
                            "bare": {
                                "units": {
                                    "b-1": {
                                        "cardinal_value": 1,
                                        "hostname": "b1",
                                        "virt_ip_address": "fd00::1",
                                    },
                                    "b-2": {
                                        "cardinal_value": 2,
                                        "hostname": "b2",
                                        "virt_ip_address": "10.9.1.2",
                                        "ports": ["8080:80/tcp"],
                                    },
                                }
                            },
                        }
                    }
                }
            }
        }
    }
    with httpx.Client(base_url=srv.url, headers=HEADERS) as h:
        assert h.post("/v1/load", json=doc).status_code == 200
        try:
            groups = h.get("/v1/prometheus/targets").json()
            got = {g["labels"]["__meta_metafs_unit_id"]: g["targets"] for g in groups}
            assert (got["p-1"], got["p-2"], "p-3" in got) == (["10.9.0.1:9100"], ["10.9.0.2:9200"], False)
            assert (got["b-1"], got["b-2"]) == (["fd00::1"], ["10.9.1.2:80"])
            assert c_port(h, "p-2") == 80  # Consul's Port: the first port, as the unit serves it
            before = kept_instances(srv)
        finally:
            assert h.delete("/v1/accounts/9").status_code == 200
        assert kept_instances(srv) == before - 2  # the two services' instances went with them


def kept_instances(srv: ServerProcess) -> int:
    text = httpx.get(srv.url + "/metrics").text
    line = next(x for x in text.splitlines() if x.startswith('metafs_cache_entries{cache="instances"}'))
    return int(float(line.split()[-1]))


def c_port(h: httpx.Client, unit: str) -> int:
    entries = h.get("/v1/health/service/metrics--m--9").json()
    return int(next(e["Service"]["Port"] for e in entries if e["Service"]["ID"] == unit))


def test_a_blocking_query_wakes_on_its_service_alone(srv: ServerProcess) -> None:
    c = client(srv)
    index, _ = c.health.service(API)
    woke: list[tuple[float, str, int]] = []

    def block() -> None:
        t0 = time.monotonic()
        new_index, entries = c.health.service(API, index=index, wait="20s")
        woke.append((time.monotonic() - t0, new_index, len(entries)))

    t = threading.Thread(target=block)
    t.start()
    time.sleep(0.5)
    with httpx.Client(base_url=srv.url, headers=HEADERS) as h:
        # another service changes: the query on api stays parked
        assert h.put(f"/v1/kv/7/shop/web/{WEB1}/hostname", content="web-1b").status_code == 200
        time.sleep(1.0)
        assert woke == []
        r = h.put("/v1/kv/7/shop/api/9d0e7a41-aaaa-4c55-8e3b-000000000001/hostname", content="api-1b")
        assert r.status_code == 200
    t.join(10)
    assert woke and woke[0][0] < 5 and int(woke[0][1]) > int(index) and woke[0][2] == 1, woke
    # no index, or index 0: at once, even with a wait
    t0 = time.monotonic()
    c.health.service(API, index=0, wait="20s")
    assert time.monotonic() - t0 < 2
