"""Markdown tables for the benchmark scripts' results (docs/benchmarks.md takes them as
printed): one table per named list of rows, a column per key of the first row."""

from __future__ import annotations


def cell(value: object) -> str:
    if isinstance(value, float) and value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"  # tiny errors stay readable
    return str(value)


def print_tables(tables: dict[str, list[dict]]) -> None:
    for name, rows in tables.items():
        print(f"\n### {name}\n")
        cols = list(rows[0])
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            print("| " + " | ".join(cell(r.get(c)) for c in cols) + " |")
