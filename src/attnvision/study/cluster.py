"""Before a study's cells run on a Ray cluster: does every node see the paths they use?

A cell runs ``attnvision train`` on whichever node Ray picks, with the driver's Python, in the
driver's working folder, reading its config from and writing its run folder into the study folder,
and reading the data, all by the paths the driver knows. On one machine they all exist; on a
cluster they are the same folders only where a shared filesystem is mounted at the same path on
every node. Without one a cell fails late on another node (its folder missing), or worse, finds a
local folder of that name and trains into a disk the driver never reads. So, before any cell
starts, the driver writes a file of random content into the study folder, and one task pinned
to each alive node must read that content back by the same absolute path, find the working folder
and the Python, and read the data.

Measured with Ray 2.60 (``ray start`` on two nodes): a worker runs in the folder where ``ray
start`` was typed on its node and with that shell's environment, not the driver's. The cells are
handed the driver's working folder and ``$ATTNVISION_DATA`` explicitly (``execute.run_on_ray``),
so a node's own working folder does not matter, and every relative path is resolved here as the
cell's process resolves it: against the driver's working folder.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from .grid import Cell
from .layout import CLUSTER_CHECK
ANSWER_TIMEOUT_S = 120  # a node's first task starts a worker that imports attnvision (and torch)


def check_cells_paths(cells: list[Cell]) -> list[str]:
    """``check_shared_paths`` for the paths ``cells`` use: the study folder (where their run
    folders are: ``<study>/<part>/<name>``), this working folder, their data folders (each
    cell's ``data_dir``, else ``$ATTNVISION_DATA`` when set; neither set, a node reads its own
    cache or system folders) and this Python."""
    folder = os.path.commonpath([os.path.abspath(cell.folder.parent.parent) for cell in cells])
    data = {cell.config.data_dir or os.environ.get("ATTNVISION_DATA") for cell in cells} - {None, ""}
    return check_shared_paths(Path(folder), os.getcwd(), sorted(data), sys.executable)


def check_shared_paths(folder: Path, cwd: str, data: list[str], python: str) -> list[str]:
    """Prove that every alive node of the connected Ray cluster sees ``folder`` (the same folder,
    by a file of random content written here and read there), the working folder ``cwd``, the
    ``data`` paths (readable; relative ones against ``cwd``) and ``python``; returns the node ids.
    Raises ValueError naming each node and the path it misses, and how to share them."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder.mkdir(parents=True, exist_ok=True)
    token, content = folder.absolute() / (CLUSTER_CHECK + secrets.token_hex(8)), secrets.token_hex(16)
    token.write_text(content)
    nodes = {node["NodeID"]: node for node in ray.nodes() if node["Alive"]}
    probe = ray.remote(num_cpus=0, max_retries=0)(missing_on_node)
    try:
        pending = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(
            str(token), content, cwd, data, python): node_id for node_id in nodes}
        ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=ANSWER_TIMEOUT_S)
        problems = [(pending[ref], f"did not answer within {ANSWER_TIMEOUT_S} s (can Ray start a worker there?)")
                    for ref in late]
        for ref in ready:
            try:
                problems += [(pending[ref], problem) for problem in ray.get(ref)]
            except ray.exceptions.RayError as e:
                problems.append((pending[ref], f"could not run the check: {str(e).strip().splitlines()[-1]} "
                                               "(is attnvision installed in the Python that Ray runs there?)"))
    finally:
        token.unlink(missing_ok=True)
    if problems:
        lines = "\n".join(f"  node {node_id} ({nodes[node_id]['NodeManagerAddress']}, "
                          f"{nodes[node_id]['NodeManagerHostname']}): {problem}" for node_id, problem in problems)
        raise ValueError(
            f"not every node of the Ray cluster ({len(nodes)} nodes) sees the paths the cells use:\n{lines}\n"
            "A cell may run on any node and reaches its run folder, the data and this Python by the same paths as "
            "here: put the study folder and the data on a filesystem mounted at the same path on every node (e.g. "
            "NFS), run `attnvision compare` from inside that folder, pass --data-dir with the data's path there, and "
            "install attnvision at the same path on every node.")
    return list(nodes)


def missing_on_node(token: str, content: str, cwd: str, data: list[str], python: str) -> list[str]:
    """On one node (a Ray task): what of ``check_shared_paths``'s paths it misses, one line each."""
    problems, folder = [], Path(token).parent
    try:
        shared = Path(token).read_text() == content
    except OSError:
        shared = False
    if not shared:
        problems.append(f"the study folder {folder}: " + ("another folder of that name (a file written into it "
                                                          "here is not there)" if folder.is_dir() else "missing"))
    if not os.path.isdir(cwd):
        problems.append(f"the working folder {cwd} (where the cells run): missing")
    for path in data:
        where = os.path.join(cwd, os.path.expanduser(path))
        try:
            os.listdir(where) if os.path.isdir(where) else open(where, "rb").close()
        except OSError as e:
            problems.append(f"the data {where}: {e.strerror or e}")
    if not os.access(python, os.X_OK):
        problems.append(f"the Python {python} (which runs the cells): missing or not executable")
    return problems
