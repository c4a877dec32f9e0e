"""Two experiment folders side by side: ``python -m aitoolbox.compare RUN_A RUN_B [--out DIR]`` (or
``python -m aitoolbox.experiment.compare``).

The report (``DIR/report.md``, printed too) names what differs: hyperparameters and environment (Python, platform,
torch, CUDA and package versions), the first step where the data-order logs differ (``data_order.json``, kept for a
training loader with an :class:`~aitoolbox.loop.ElasticSampler`), the first step and the first epoch where the loss
or a metric differs beyond the tolerance, and ``DIR/curves.png`` with both runs' loss curves.

Exit status: 0 when the runs agree (data order, losses and metrics within the tolerance), 1 when they differ, 2 on bad
arguments (a folder that is not an experiment folder).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Comparison", "Run", "compare", "first_trained", "main"]

_NOISE = {"written", "executable"}  # environment entries that differ between any two runs


@dataclass
class Run:
    """What an experiment folder holds that a comparison reads (each ``{}`` when its file is missing)."""

    path: Path
    hyperparams: dict[str, Any]
    environment: dict[str, Any]
    history: dict[str, list[Any]]
    data_order: dict[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> Run:
        folder = Path(path)
        if not (folder / "hyperparams.json").is_file():
            raise ValueError(f"{folder} is not an experiment folder (it has no hyperparams.json)")
        return cls(
            folder,
            _json(folder / "hyperparams.json"),
            _json(folder / "environment.json"),
            _json(folder / "results" / "training_history.json"),
            _json(folder / "data_order.json"),
        )


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def diff(a: dict[str, Any], b: dict[str, Any], skip: Collection[str] = ()) -> list[tuple[str, Any, Any]]:
    """``(key, a's value, b's value)`` for every (dotted) key whose values differ; a missing one is ``None``."""
    fa, fb = _flat(a), _flat(b)
    keys = sorted(fa.keys() | fb.keys())
    return [(k, fa.get(k), fb.get(k)) for k in keys if k not in skip and fa.get(k) != fb.get(k)]


def _close(x: Any, y: Any, rtol: float, atol: float) -> bool:
    if not isinstance(x, int | float) or not isinstance(y, int | float):
        return bool(x == y)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return abs(x - y) <= atol + rtol * abs(y)


def _replay(spec: dict[str, Any], steps: int) -> Iterator[tuple[int, int, Any, bytes]]:
    """``(step, epoch, global batch, chain after it)`` for the first ``steps`` optimizer steps of an uninterrupted run
    with sampler ``spec`` (1-based steps).

    Raises:
        ValueError: torch or aitoolbox-core-loop is not installed (this package depends on neither).
    """
    try:
        from aitoolbox.loop.elastic import GENESIS, ElasticSampler, chain_step
    except ImportError as err:
        raise ValueError(f"rebuilding the data order needs torch and aitoolbox-core-loop ({err})") from err
    sampler, chain, epoch, done = ElasticSampler.from_spec(spec), GENESIS, 0, 0
    while done < steps:
        sampler.set_epoch(epoch)
        for step in range(min(sampler.steps, steps - done)):
            batch = sampler.global_batch(step)
            chain, done = chain_step(chain, batch), done + 1
            yield done, epoch, batch, chain
        epoch += 1


def _chains(spec: dict[str, Any], upto: int) -> list[tuple[str, int]]:
    """The data-order chain and the epoch after each of the first ``upto`` steps of an uninterrupted run with
    sampler ``spec``."""
    return [(chain.hex(), epoch) for _, epoch, _, chain in _replay(spec, upto)]


def first_order_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """Where two data-order logs part: ``{'step', 'epoch', 'after'}`` (the first differing step, and the last step
    known equal), ``None`` when every common mark agrees. Between two marks the exact step is found by recomputing
    both chains from their sampler specs, where each run's marks match its spec."""
    ma = {m["step"]: m for m in a.get("marks", [])}
    mb = {m["step"]: m for m in b.get("marks", [])}
    common = sorted(ma.keys() & mb.keys())
    if a.get("steps") == b.get("steps") and a.get("steps") is not None:
        common.append(a["steps"])
        ma[a["steps"]] = {"step": a["steps"], "sha256": a["sha256"], "epoch": None}
        mb[b["steps"]] = {"step": b["steps"], "sha256": b["sha256"], "epoch": None}
    differ = [s for s in common if ma[s]["sha256"] != mb[s]["sha256"]]
    if not differ:
        return None
    step = differ[0]
    after = max((s for s in common if s < step), default=0)
    found = {"step": step, "epoch": ma[step]["epoch"], "after": after, "exact": step == after + 1}
    try:
        ca, cb = _chains(a["sampler"], step), _chains(b["sampler"], step)
    except Exception:  # a weighted sampler (no weights in the spec), a damaged spec: the interval
        return found
    if all(ca[s - 1][0] == ma[s]["sha256"] for s in ma if s <= step) and all(
        cb[s - 1][0] == mb[s]["sha256"] for s in mb if s <= step
    ):
        exact = next(s for s in range(after + 1, step + 1) if ca[s - 1][0] != cb[s - 1][0])
        found.update(step=exact, epoch=ca[exact - 1][1], after=exact - 1, exact=True)
    return found


def first_loss_difference(a: dict[str, Any], b: dict[str, Any], rtol: float, atol: float) -> dict[str, Any] | None:
    """The first common mark whose step loss differs beyond the tolerance."""
    la = {m["step"]: m.get("loss") for m in a.get("marks", [])}
    lb = {m["step"]: m.get("loss") for m in b.get("marks", [])}
    for step in sorted(la.keys() & lb.keys()):
        if not _close(la[step], lb[step], rtol, atol):
            return {"step": step, "a": la[step], "b": lb[step]}
    return None


def first_metric_difference(
    a: dict[str, list[Any]], b: dict[str, list[Any]], rtol: float, atol: float
) -> dict[str, Any] | None:
    """The first epoch (and metric) where the training histories differ beyond the tolerance."""
    firsts = []
    for name in sorted(a.keys() & b.keys()):
        for epoch, (x, y) in enumerate(zip(a[name], b[name], strict=False)):
            if not _close(x, y, rtol, atol):
                firsts.append({"epoch": epoch, "metric": name, "a": x, "b": y})
                break
    return min(firsts, key=lambda f: f["epoch"], default=None)


@dataclass
class Comparison:
    """The differences between two runs (see :func:`compare`)."""

    a: Run
    b: Run
    hyperparams: list[tuple[str, Any, Any]] = field(default_factory=list)
    environment: list[tuple[str, Any, Any]] = field(default_factory=list)
    data_order: dict[str, Any] | None = None
    loss: dict[str, Any] | None = None
    metric: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return self.data_order is None and self.loss is None and self.metric is None

    def report(self, plot: str | None = None) -> str:
        lines = ["# Run comparison", "", f"- A: `{self.a.path}`", f"- B: `{self.b.path}`", ""]
        for title, rows in (("Hyperparameters", self.hyperparams), ("Environment", self.environment)):
            lines += [f"## {title}", ""]
            lines += [f"- `{k}`: {va!r} (A) vs {vb!r} (B)" for k, va, vb in rows] or ["- the same"]
            lines.append("")
        lines += ["## Data order", ""]
        order = self.data_order
        if order is None and self.a.data_order and self.b.data_order:
            lines.append("- the same at every common mark")
        elif order is None:
            pass
        elif order["exact"]:
            lines.append(f"- **first differing step: {order['step']}** (equal up to step {order['after']})")
        else:
            lines.append(f"- **first differing step: between {order['after'] + 1} and {order['step']}** (the marks)")
        lines += [f"- {note}" for note in self.notes]
        lines += ["", "## Loss and metrics", ""]
        if self.loss is not None:
            loss = self.loss
            lines.append(f"- **first step whose loss differs: {loss['step']}** ({loss['a']} vs {loss['b']})")
        if self.metric is not None:
            m = self.metric
            what = f"epoch {m['epoch'] + 1} (index {m['epoch']})"
            lines.append(f"- **first epoch where `{m['metric']}` differs: {what}** ({m['a']} vs {m['b']})")
        if self.loss is None and self.metric is None:
            lines.append("- within the tolerance at every common step and epoch")
        if plot:
            lines += ["", f"![loss curves]({plot})"]
        return "\n".join(lines) + "\n"


def compare(a: str | Path, b: str | Path, *, rtol: float = 1e-6, atol: float = 1e-8) -> Comparison:
    """Compare the experiment folders ``a`` and ``b``."""
    ra, rb = Run.read(a), Run.read(b)
    result = Comparison(ra, rb, diff(ra.hyperparams, rb.hyperparams), diff(ra.environment, rb.environment, _NOISE))
    if ra.data_order and rb.data_order:
        result.data_order = first_order_difference(ra.data_order, rb.data_order)
        result.loss = first_loss_difference(ra.data_order, rb.data_order, rtol, atol)
    else:
        missing = [name for name, run in (("A", ra), ("B", rb)) if not run.data_order]
        result.notes.append(
            f"no data-order log in {' and '.join(missing)} (it is kept for a training loader with an ElasticSampler)"
        )
    result.metric = first_metric_difference(ra.history, rb.history, rtol, atol)
    return result


def first_trained(run: str | Path, sample: int) -> dict[str, Any] | None:
    """The first optimizer step of the run that trained dataset sample ``sample`` (``{'step', 'epoch',
    'checkpoint'}``: the first checkpoint that includes that step, ``None`` if none does), or ``None`` when the run
    has not trained it. Computed from ``data_order.json``'s sampler settings and checked against its marks.

    Raises:
        ValueError: no data-order log, a weighted sampler (its weights are not in the log), or marks that do not
            follow the sampler settings (the settings changed during the run).
    """
    r = Run.read(run)
    log = r.data_order
    if not log.get("sampler"):
        raise ValueError(f"{r.path} has no data-order log (kept for a training loader with an ElasticSampler)")
    if log["sampler"]["weighted"]:
        raise ValueError("the run's sampler is weighted: its weights are not in the log, its order cannot be rebuilt")
    marks = {m["step"]: m["sha256"] for m in log.get("marks", [])} | {log["steps"]: log["sha256"]}
    found: dict[str, Any] | None = None
    for done, epoch, batch, chain in _replay(log["sampler"], log["steps"]):  # every mark checked
        if found is None and bool((batch == sample).any()):
            found = {"step": done, "epoch": epoch, "checkpoint": None}
        if done in marks and marks[done] != chain.hex():
            raise ValueError(f"the data-order log of {r.path} does not follow its sampler settings at step {done}")
    if found is not None:
        saved = []
        for manifest in (r.path / "checkpoint_model").glob("*/manifest.json"):
            steps = (json.loads(manifest.read_text()).get("meta") or {}).get("data_order", {}).get("steps")
            if steps is not None and steps >= found["step"]:
                saved.append((steps, manifest.parent.name))
        found["checkpoint"] = min(saved)[1] if saved else None
    return found


def plot_curves(cmp: Comparison, path: Path) -> None:
    """Both runs' loss: per mark step where both have data-order marks, else per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    by_step = bool(cmp.a.data_order.get("marks")) and bool(cmp.b.data_order.get("marks"))
    for run, label in ((cmp.a, "A"), (cmp.b, "B")):
        if by_step:
            marks = run.data_order["marks"]
            ax.plot([m["step"] for m in marks], [m["loss"] for m in marks], label=f"{label}: {run.path.name}")
        else:
            ax.plot(run.history.get("loss", []), marker="o", label=f"{label}: {run.path.name}")
    ax.set_xlabel("step" if by_step else "epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aitoolbox.compare", description="Compare two experiment folders.")
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path, nargs="?", help="omitted with --sample")
    parser.add_argument("--sample", type=int, help="RUN_A only: the first step and checkpoint that trained this sample")
    parser.add_argument("--out", type=Path, default=Path("compare-report"), help="report folder (compare-report)")
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance for losses and metrics")
    parser.add_argument("--atol", type=float, default=1e-8, help="absolute tolerance for losses and metrics")
    args = parser.parse_args(argv)
    if args.sample is not None:
        return _sample(args.run_a, args.sample)
    if args.run_b is None:
        parser.error("give two experiment folders (or one with --sample)")
    try:
        cmp = compare(args.run_a, args.run_b, rtol=args.rtol, atol=args.atol)
    except ValueError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        plot_curves(cmp, args.out / "curves.png")
        plot: str | None = "curves.png"
    except ImportError:
        cmp.notes.append("no curves.png: matplotlib is not installed (pip install aitoolbox-results[plots])")
        plot = None
    text = cmp.report(plot=plot)
    (args.out / "report.md").write_text(text)
    sys.stdout.write(f"{text}(written to {args.out / 'report.md'})\n")
    return 0 if cmp.same else 1


if __name__ == "__main__":
    sys.exit(main())


def _sample(run: Path, sample: int) -> int:
    try:
        found = first_trained(run, sample)
    except ValueError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    if found is None:
        sys.stdout.write(f"sample {sample} was not trained in {run}\n")
        return 1
    where = f"checkpoint {found['checkpoint']}" if found["checkpoint"] else "no checkpoint yet"
    sys.stdout.write(
        f"sample {sample} was first trained at step {found['step']} (epoch index {found['epoch']}); first in {where}\n"
    )
    return 0
