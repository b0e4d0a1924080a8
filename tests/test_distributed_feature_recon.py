"""The feature-recon reproduction's attack stage as cells (one per detector), locally.

Same records and sanity flags as the loop it replaced (detector_robustness per detector);
a rerun into the same cells folder attacks nothing again; other thresholds go to another
folder instead of reusing stale cells. (Ray: test_distributed_ray.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from basin.reproductions.feature_recon import attack_grid
from basin.robustness.detector_level import detector_robustness
from distributed_work import toy_attack_stage

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cells_give_the_records_of_the_detector_loop(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    stage = toy_attack_stage()
    loop = {name: detector_robustness(det, stage.x_id, stage.x_ood, stage.settings,
                                      id_name=stage.id_name, ood_name=stage.ood_name)
            for name, det in stage.detectors.items()}
    cells = attack_grid.attack_detectors(stage, model_id="toy", cells_dir=tmp_path)
    assert list(cells) == list(loop)
    for name, result in loop.items():
        assert cells[name].to_dict() == result.to_dict()
    # the attacks did something: PGD lowers the AUROC with both sides attacked
    auroc = {r.condition: r.value for r in loop["msp"].records if r.metric == "auroc"}
    assert auroc["pgd:reject-id+accept-ood:8/255:steps=3"] < auroc["clean"]
    calls: list[str] = []
    original = attack_grid.detector_cell

    def counted(cell, shared):  # type: ignore[no-untyped-def]
        calls.append(cell.detector)
        return original(cell, shared)

    monkeypatch.setattr(attack_grid, "detector_cell", counted)
    again = attack_grid.attack_detectors(stage, model_id="toy", cells_dir=tmp_path)
    assert calls == [] and {k: v.to_dict() for k, v in again.items()} == \
        {k: v.to_dict() for k, v in loop.items()}
    stage.detectors["msp"].threshold = 0.5  # refitted: the old cells must not be reused
    attack_grid.attack_detectors(stage, model_id="toy", cells_dir=tmp_path)
    assert calls == ["msp", "energy"] and len(list(tmp_path.iterdir())) == 2
