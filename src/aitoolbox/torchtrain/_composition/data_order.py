"""The experiment folder's ``data_order.json``: the data-order log's marks (the SHA-256 chain of the global sample
indices every ``log_every`` steps, with the step's loss) for runs whose training loader has an
:class:`~aitoolbox.loop.ElasticSampler`. Written by the writing process when a checkpoint commits and when training
ends; a resumed run replaces the marks past its checkpoint (the interrupted run's last ones)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aitoolbox.experiment import ExperimentWriter
from aitoolbox.loop import LoopView

__all__ = ["DATA_ORDER", "write_data_order"]

logger = logging.getLogger(__name__)

DATA_ORDER = "data_order.json"


def write_data_order(folder: Path | None, loop: LoopView) -> None:
    """Add the loop's new marks to ``folder/data_order.json`` (nothing without an ElasticSampler's log)."""
    log = loop.state.order_log
    rows = log.take_marks()
    if folder is None or not loop.is_main_process or log.spec is None:
        return
    path = folder / DATA_ORDER
    marks: list[dict[str, Any]] = []
    if path.exists():
        try:
            marks = json.loads(path.read_text())["marks"]
        except (OSError, ValueError, KeyError) as err:
            logger.warning("%s is unreadable (%s): it is written again from this run's marks", path, err)
    first = rows[0]["step"] if rows else log.steps + 1  # an earlier run's marks past this one's position are stale
    doc = {
        "format": 1,
        "every": log.every,
        "sampler": log.spec,
        "steps": log.steps,
        "sha256": log.chain.hex(),
        "marks": [m for m in marks if m["step"] < first] + rows,
    }
    ExperimentWriter(folder).write_json(DATA_ORDER, doc)
