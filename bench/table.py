"""One row per figure: what was measured, its target, whether it meets it. Shared by every bench_*.py."""
from __future__ import annotations

import platform
from dataclasses import dataclass

import psutil


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    meets: bool | None = None  # None: no target, or not run
    detail: str = ""

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "NO", None: "-"}[self.meets]


def machine() -> str:
    return (f"{platform.node()}: {platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB")


def print_table(rows: list[Row], title: str = "") -> str:
    lines = [f"### {title}" if title else "", f"machine: {machine()}", "",
             "| figure | value | target | meets | detail |", "|---|---|---|---|---|"]
    lines += [f"| {r.figure} | {r.value} | {r.target} | {r.verdict} | {r.detail} |" for r in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text
