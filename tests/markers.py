"""Markers shared by test modules (import them: ``from markers import needs_torchsort``)."""

from __future__ import annotations

import importlib.util

import pytest

needs_torchsort = pytest.mark.skipif(importlib.util.find_spec("torchsort") is None,
                                     reason="the soft sorter needs torchsort")
