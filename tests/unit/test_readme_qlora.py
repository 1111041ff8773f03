"""The README's QLoRA table is the registry's declarations, as ``qlora_table()`` renders them."""

from __future__ import annotations

import re
from pathlib import Path

from lorasweep.variants import qlora_table, registry


def test_the_readme_qlora_table_matches_the_registry():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"<!-- qlora-table:[^>]*-->\n(.*?)\n<!-- /qlora-table -->", readme, re.S)
    assert block, "README lost its generated QLoRA table"
    assert block.group(1) == qlora_table()
    for key in registry():  # every variant is named once
        assert qlora_table().count(f"`{key}`") == 1, key
