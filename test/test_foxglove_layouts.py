"""The layouts in foxglove_configs/ import into Foxglove: a well-formed layout tree whose every panel is configured,
and whose every panel is a Foxglove built-in or one that the extension registers (by its qualified name)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = {"Image", "Plot", "DiagnosticSummary", "DiagnosticStatusPanel", "RawMessages", "Parameters", "Tab"}
TOPICS = {"/joint_states", "/diagnostics", "/camera/ego_cam/compressed", "/camera/cam_left_wrist/compressed",
          "/camera/cam_right_wrist/compressed"}


def registered_panels() -> set[str]:
    display = json.loads((ROOT / "foxglove_panels/package.json").read_text())["displayName"]
    index = (ROOT / "foxglove_panels/src/index.ts").read_text()
    block = index[index.index("export const PANELS"):]
    names = re.findall(r'^\s+"([^"]+)": init\w+Panel', block[: block.index("} as const")], re.M)
    return {f"{display}.{name}" for name in names}


def leaves(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    assert node["direction"] in ("row", "column")
    return leaves(node["first"]) + leaves(node["second"])


@pytest.mark.parametrize("name", ["enhanced_training_layout.json", "hil_session_layout.json"])
def test_layout_references_only_known_panels_and_topics(name):
    layout = json.loads((ROOT / "foxglove_configs" / name).read_text())
    ids = leaves(layout["layout"])
    assert sorted(ids) == sorted(layout["configById"]), "every panel in the tree is configured, and only those"
    known = BUILTIN | registered_panels()
    assert len(registered_panels()) == 4
    for panel_id in ids:
        assert panel_id.split("!")[0] in known, panel_id
    config = json.dumps(layout["configById"])
    used = set(re.findall(r'"(/[a-z_/]+?)(?:\.[a-z]+\[\d+\])?"', config))
    assert used and used <= TOPICS, used - TOPICS


def test_seed_layout_has_the_three_seed_panels_with_image_plot_and_diagnostics():
    layout = json.loads((ROOT / "foxglove_configs/enhanced_training_layout.json").read_text())
    kinds = {panel_id.split("!")[0].split(".")[-1] for panel_id in layout["configById"]}
    assert kinds == {"Training Dashboard", "Dataset Browser", "Model Comparison", "Image", "Plot", "DiagnosticSummary"}
    hil = json.loads((ROOT / "foxglove_configs/hil_session_layout.json").read_text())
    assert sum(k.startswith("Image!") for k in hil["configById"]) == 3
