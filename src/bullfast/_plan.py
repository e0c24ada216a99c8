"""The plan of an add: the flattened nodes of one or more job trees.

Built by ``_core.plan_jobs`` (compiled) or ``_core_py.plan_jobs`` (its twin); read by the
encoder and by the Python layer to build the returned job tree. Nodes are numbered in
breadth-first order, so every parent precedes its children and the children of one node are
contiguous: ``first_child[i] .. first_child[i] + n_children[i] - 1``.
"""

from __future__ import annotations

from typing import Any


class Plan:
    __slots__ = (
        "nodes",
        "ids",
        "parents",
        "queue_of",
        "opts_of",
        "first_child",
        "n_children",
        "prefixes",
        "queue_names",
        "queue_prefixes",
        "roots",
        "checks",
        "auto_ids",
        "root_label",
        "root_parent",
    )

    def __init__(self) -> None:
        self.nodes: list[Any] = []  # the caller's node mappings
        self.ids: list[str] = []  # '' = assigned by the server's counter
        self.parents: list[int] = []  # index of the parent node, -1 for roots
        self.queue_of: list[int] = []  # index into queue_prefixes
        self.opts_of: list[Any] = []  # options.JobOptions, shared between nodes
        self.first_child: list[int] = []
        self.n_children: list[int] = []
        self.prefixes: list[str] = []  # per queue index: the key prefix ("bull")
        self.queue_names: list[str] = []  # per queue index: the queue name ("B")
        self.queue_prefixes: list[str] = []  # per queue index: "bull:B:"
        self.roots: list[int] = []
        # Server-side checks before anything is written: (kind, a, b), see add_jobs-1.lua.
        self.checks: list[tuple[str, str, str]] = []
        self.auto_ids = False
        self.root_label = "root"
        # (parent key, parent queue key) that every root is a child of (a streamed fan-out)
        self.root_parent: tuple[str, str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def job_key(self, i: int) -> str:
        return self.queue_prefixes[self.queue_of[i]] + self.ids[i]

    def parent_key(self, i: int) -> str | None:
        p = self.parents[i]
        if p >= 0:
            return self.job_key(p)
        if self.root_parent is not None:
            return self.root_parent[0]
        key: str | None = self.opts_of[i].parent_key
        return key

    def path(self, i: int) -> str:
        """Where node ``i`` is in the caller's input: ``root.children[2].children[0]``."""
        parts = []
        while self.parents[i] >= 0:
            p = self.parents[i]
            parts.append(f"children[{i - self.first_child[p]}]")
            i = p
        if len(self.roots) > 1 or self.root_label != "root":
            parts.append(f"{self.root_label}[{self.roots.index(i)}]")
        else:
            parts.append("root")
        return ".".join(reversed(parts))
