"""The Ray executor's check that every node of a cluster sees the paths a study's cells use
(study/cluster.py), on a real two-node Ray cluster on this machine: a head node, and a second node
joined with ``ray start --address`` from another working folder, as on a real cluster (a worker
runs in the folder where ``ray start`` was typed on its node).

A node without the shared filesystem is simulated by starting the second node in its own mount
namespace (``unshare --mount``) with a tmpfs over the folder ``local/`` holding only an empty
``study/``: there these paths lead to other folders, or nowhere, as they do on a node where the
study folder or the data sit on the driver's own disk and not on a filesystem mounted on every
node; a folder of the same name there is not the same folder. ``shared/`` is seen alike by both
nodes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from attnvision.cli import app
from attnvision.study.cluster import check_shared_paths
from attnvision.study.layout import CLUSTER_CHECK

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> SimpleNamespace:
    """Two Ray nodes on this machine, the second blind to what the driver has in ``local``; both
    shut down (their process groups killed) after the module's tests. Fields: address, head (node
    id), blind (node id), blind_at ("IP, hostname"), shared, local."""
    root = tmp_path_factory.mktemp("cluster")
    shared, local, head_cwd, node_cwd = (root / name for name in ("shared", "local", "head", "node"))
    for folder in (shared, local, head_cwd, node_cwd):
        folder.mkdir()
    namespace = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    if subprocess.run([*namespace, "mount", "-t", "tmpfs", "tmpfs", str(local)], capture_output=True).returncode:
        pytest.skip("simulating a node without the shared folder needs a mount namespace (unshare --mount)")
    address = f"127.0.0.1:{free_port()}"
    # its own temp folder: `ray start` records its cluster in <temp>/ray_current_cluster, where a
    # plain `ray.init()` (the other Ray tests) would otherwise find this killed cluster and hang
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths live under it
    blind_node = ('mount -t tmpfs tmpfs "$0" && mkdir "$0/study" && exec "$1" start --address "$2" --block '
                  '--temp-dir "$3" --num-cpus 1 --resources \'{"blind": 1}\' --disable-usage-stats')
    # with ~/.ray/auth_token present `ray start --head` turns token authentication on but a joining
    # `ray start --address` does not: one setting for every process here
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    processes = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        try:
            processes.append(subprocess.Popen(
                [RAY, "start", "--head", "--block", "--port", address.split(":")[1], "--num-cpus", "1",
                 "--include-dashboard", "false", "--ray-client-server-port", str(free_port()), "--temp-dir", temp,
                 "--disable-usage-stats"], cwd=head_cwd, env=env, start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            processes.append(subprocess.Popen(
                [*namespace, "sh", "-c", blind_node, str(local), RAY, address, temp], cwd=node_cwd, env=env,
                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            head, blind = wait_for_nodes(address, processes)
            yield SimpleNamespace(address=address, head=head["NodeID"], blind=blind["NodeID"],
                                  blind_at=f"{blind['NodeManagerAddress']}, {blind['NodeManagerHostname']}",
                                  shared=shared, local=local)
        finally:
            for process in processes:
                os.killpg(process.pid, signal.SIGKILL)  # ray start --block and every Ray process it started
                process.wait()
            shutil.rmtree(temp, ignore_errors=True)


def wait_for_nodes(address: str, processes: list, timeout_s: float = 45) -> tuple[dict, dict]:
    """(head node, blind node) as ``ray.nodes()`` describes them, once both joined ``address``."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert time.monotonic() < deadline, "the two Ray nodes did not start"
        assert all(p.poll() is None for p in processes), "a `ray start` exited"
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
            break
        except (ConnectionError, RuntimeError):
            time.sleep(0.5)
    try:
        while True:
            nodes = [node for node in ray.nodes() if node["Alive"]]
            if len(nodes) == 2:
                return tuple(sorted(nodes, key=lambda node: "blind" in node["Resources"]))
            assert time.monotonic() < deadline, "the second Ray node did not join"
            time.sleep(0.5)
    finally:
        ray.shutdown()


@pytest.fixture
def connected(cluster) -> SimpleNamespace:
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()


def test_every_node_sees_the_shared_paths(connected):
    (connected.shared / "data").mkdir()
    study = connected.shared / "study"
    # the data path relative, as a cell resolves it: against the driver's working folder, not the
    # second node's (where "data" does not exist)
    nodes = check_shared_paths(study, str(connected.shared), ["data"], sys.executable)
    assert sorted(nodes) == sorted([connected.head, connected.blind])
    assert not list(study.glob(CLUSTER_CHECK + "*"))


def test_a_node_without_the_data_is_named_with_the_path(connected):
    data, study = connected.local / "data", connected.shared / "study-data"
    data.mkdir()
    with pytest.raises(ValueError) as error:
        check_shared_paths(study, str(connected.shared), [str(data)], sys.executable)
    message = str(error.value)
    assert f"node {connected.blind} ({connected.blind_at}): the data {data}: No such file or directory" in message
    assert connected.head not in message and f"the study folder {study}" not in message
    assert "pass --data-dir with the data's path there" in message
    assert not list(study.glob(CLUSTER_CHECK + "*"))


def test_compare_stops_before_any_cell_when_a_node_does_not_see_the_study_folder(cluster, fmnist_dir):
    out = cluster.local / "study"  # on the blind node: its own, empty folder of that name
    result = CliRunner().invoke(app, [
        "compare", "--attn", "none,se", "--epochs", "1", "--train-subset", "200", "--val-size", "100",
        "--batch-size", "64", "--data-dir", str(fmnist_dir), "--localization", "none", "--jobs", "2",
        "--out", str(out), "--executor", "ray", "--ray-address", cluster.address])
    message = " ".join(result.output.split())  # undo the console's line wrapping
    assert result.exit_code == 2, result.output
    assert f"node {cluster.blind} ({cluster.blind_at}): the study folder {out}: another folder of that name" in message
    assert cluster.head not in message
    assert "mounted at the same path on every node" in message
    assert not list(out.rglob("train.log"))  # no cell started
    assert not list(out.glob(CLUSTER_CHECK + "*"))
