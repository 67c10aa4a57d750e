"""Can the cluster hold this run? Checked before any actor starts, because Ray would otherwise
leave an actor that can never be placed pending forever (and shard tasks starved of CPUs wait
silently). Pure: it reads the alive nodes' total resources (`ray.nodes()`), nothing else.

Placement model, as Ray places them: each rewriter replica needs `gpus_per_replica` GPUs and
`cpus_per_replica` CPUs on one node (tensor parallel stays within a node); each scorer group
replica needs its `num_gpus` and `num_cpus` on one node; and after all actors are placed at
least one shard task (`shard_task_cpus`) must still fit somewhere.
"""

from dataclasses import dataclass

from pf1m.schemas.config import RunConfig


@dataclass
class Node:
    name: str
    cpus: float
    gpus: float


def alive_nodes(ray_nodes: list[dict]) -> list[Node]:
    return [
        Node(
            n.get("NodeManagerAddress", n.get("NodeID", "?")),
            float(n["Resources"].get("CPU", 0.0)),
            float(n["Resources"].get("GPU", 0.0)),
        )
        for n in ray_nodes
        if n.get("Alive")
    ]


def _demands(cfg: RunConfig, rewriters: bool, scorers: bool) -> list[tuple[str, float, float]]:
    """(what, cpus, gpus) of every actor to start, largest first (first-fit decreasing)."""
    res = cfg.resources
    out = [
        (f"rewriter replica {i}", res.cpus_per_replica, res.gpus_per_replica)
        for i in range(res.rewriter_replicas if rewriters else 0)
    ]
    used = set(cfg.filters.model_filters()) if scorers else set()
    for group in cfg.scoring.groups:
        names = [n for n in group.scorers if n in used]
        if names:
            for r in range(group.replicas):
                out.append(
                    (f"scorer {'+'.join(names)} replica {r}", group.num_cpus, group.num_gpus)
                )
    return sorted(out, key=lambda d: (d[2], d[1]), reverse=True)


def check(
    cfg: RunConfig, nodes: list[Node], rewriters: bool = True, scorers: bool = True
) -> list[str]:
    """Problems that would leave the run waiting forever; empty when it fits. Capacity, not
    what other jobs hold right now. `rewriters`/`scorers`: False when already started."""
    if not nodes:
        return ["the cluster has no alive node"]
    res = cfg.resources
    total_gpus = sum(n.gpus for n in nodes)
    total_cpus = sum(n.cpus for n in nodes)
    problems = []
    demands = _demands(cfg, rewriters, scorers)
    need_gpus = sum(g for _, _, g in demands)
    if need_gpus > total_gpus + 1e-9:
        problems.append(
            f"the config asks for {need_gpus:g} GPUs ({res.rewriter_replicas} rewriter replicas x "
            f"{res.gpus_per_replica:g} + scorer groups); the cluster has {total_gpus:g} "
            f"over {len(nodes)} nodes"
        )
    biggest = max(n.gpus for n in nodes)
    if rewriters and res.gpus_per_replica > biggest:
        problems.append(
            f"resources.gpus_per_replica={res.gpus_per_replica:g} must fit on one node; the "
            f"largest node has {biggest:g} GPUs"
        )
    free = {n.name: [n.cpus, n.gpus] for n in nodes}
    for what, cpus, gpus in demands:
        host = next(
            (k for k, (c, g) in free.items() if c + 1e-9 >= cpus and g + 1e-9 >= gpus), None
        )
        if host is None:
            problems.append(
                f"{what} ({cpus:g} CPUs, {gpus:g} GPUs) fits on no node once the others are "
                f"placed (cluster: {total_cpus:g} CPUs, {total_gpus:g} GPUs)"
            )
            break
        free[host][0] -= cpus
        free[host][1] -= gpus
    else:
        if not any(c + 1e-9 >= res.shard_task_cpus for c, _ in free.values()):
            problems.append(
                f"no CPU left for shard tasks (resources.shard_task_cpus="
                f"{res.shard_task_cpus:g}) once the actors hold theirs: lower "
                "resources.cpus_per_replica or scoring.groups[].num_cpus, or add nodes"
            )
    return problems
