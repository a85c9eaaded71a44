"""Tidy versions of the report's display tables: long format, one observation per row, snake_case names.

A display table is wide (one column per metric and shot group, titles such as ``MAE few``). Its tidy
twin keeps the table's key columns (``method``, ``condition`` ...), turns every other column into rows and
splits the column title into variables (``metric``, ``shot_group``, ``k_range``, ``variant``) by the
table's ``describe`` function, with the number in ``value``. A table may instead carry its own tidy frame
(``shot_regions``: one row per label bin).
"""

from __future__ import annotations

import re

import pandas as pd

SHOT_GROUPS = ("all", "many", "median", "few")


def snake(name: str) -> str:
    """``"CI lower"`` -> ``ci_lower``, ``"rule (fixed on val)"`` -> ``rule_fixed_on_val``."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def describe_metric(column: str) -> dict:
    """The default split of a column title: the whole title is the metric."""
    return {"metric": snake(column)}


def describe_shot_column(column: str) -> dict:
    """``"MAE few"`` -> metric mae, shot_group few; ``"n"`` -> metric n, shot_group all."""
    metric, _, group = column.rpartition(" ")
    if group in SHOT_GROUPS and metric:
        return {"metric": snake(metric), "shot_group": group}
    return {"metric": snake(column), "shot_group": "all"}


def describe_k_range(column: str) -> dict:
    """``"MAE K < 2.5"`` -> metric mae, k_range "< 2.5"."""
    metric, _, k_range = column.partition(" K ")
    return {"metric": snake(metric), "k_range": k_range}


def tidy_frame(df: pd.DataFrame, keys: tuple[str, ...], describe=describe_metric) -> pd.DataFrame:
    """Long format of ``df``: its ``keys`` columns, the described column title and ``value``."""
    keys = [k for k in keys if k in df.columns]
    values = df.astype({c: object for c in df.columns if c not in keys})  # counts stay integers
    long = values.reset_index(drop=True).reset_index(names="_row").melt(id_vars=["_row", *keys],
                                                                         var_name="_column", value_name="value")
    long = long.sort_values("_row", kind="stable").reset_index(drop=True)  # one table row after another
    fields = pd.DataFrame([describe(c) for c in long["_column"]], index=long.index)
    out = pd.concat([long[keys], fields, long[["value"]]], axis=1)
    return out.rename(columns=snake)
