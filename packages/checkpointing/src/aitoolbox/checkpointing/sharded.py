"""Sharded checkpoint state: every rank writes its share with ``torch.distributed.checkpoint`` (DCP).

A sharded checkpoint keeps the parts every rank holds a share of (a sharded model's and optimizer's tensors) in
DCP's files in the checkpoint's ``shards/`` folder, and the rest (plain data, the loop's position) as ordinary
parts. The commit is the usual one, run as a collective: every rank writes its files into the same temporary
folder, each rank hashes its own files, rank 0 records every file with its size and SHA-256 in the manifest (with
the layout and the world size), then the rename and ``latest``. So ``verify()`` names a damaged shard before any
tensor loads, and DCP, which checks no shard content itself, only ever reads verified files.

DCP reads its ``.metadata`` file with ``pickle``: here it is read with an unpickler that admits only DCP's metadata
classes and torch's sizes and dtypes, so a hostile copy cannot run code when it is listed or loaded. Only tensors go
into the DCP files (what is not a tensor goes into a plain part, loaded with ``weights_only=True``), so no pickled
value is ever loaded from them either.

Example (one process, no process group):
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp()) / SHARDS
    >>> files = write_shards(folder, {"model": {"w": torch.arange(4.0)}}, None)
    >>> sorted(files)
    ['.metadata', '__0_0.distcp']
    >>> ShardedState(folder).read()["model"]["w"]
    tensor([0., 1., 2., 3.])
    >>> state = {"state": {"w": {"step": torch.tensor(2.0), "lr": 0.1}}, "param_groups": [{"params": ["w"]}]}
    >>> tensors, rest = split_tensors(state)
    >>> tensors
    {'state': {'w': {'step': tensor(2.)}}}
    >>> merge_trees(tensors, rest) == {"state": {"w": {"step": 2.0, "lr": 0.1}}, "param_groups": [{"params": ["w"]}]}
    True
"""

from __future__ import annotations

import contextlib
import io
import pickle
import warnings
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

from aitoolbox.checkpointing._fs import fsync_dir, sha256_file
from aitoolbox.checkpointing.errors import CheckpointCorruptError, CheckpointIncompatibleError

__all__ = [
    "DCP_METADATA",
    "SHARDS",
    "GroupCollective",
    "ShardedState",
    "invisible_ranks",
    "merge_trees",
    "shard_rank",
    "split_tensors",
    "write_shards",
]

#: the folder of a sharded checkpoint that holds DCP's files
SHARDS = "shards"
#: DCP's metadata file in it (the one hidden name a manifest may list)
DCP_METADATA = ".metadata"


class GroupCollective:
    """The collectives a sharded commit needs, on a ``torch.distributed`` process group.

    Args:
        group: the process group (``None``: the default one). A background (asynchronous) save needs a group of
            its own, so that its collectives never interleave with training's: :meth:`new_group`.
    """

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    @classmethod
    def new_group(cls) -> GroupCollective:
        """A collective on a new gloo group of every rank (every rank must call it, in the same order)."""
        import torch.distributed as dist

        return cls(dist.new_group(backend="gloo"))

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=dist.get_global_rank(self.group, 0) if self.group else 0, group=self.group)
        return box[0]


def split_tensors(tree: Any) -> tuple[Any, Any]:
    """``(tensors, rest)``: ``tree`` with only its tensor leaves, and with everything else (``None`` where a side
    has nothing; dicts and lists keep their shape so :func:`merge_trees` puts them back together)."""
    if isinstance(tree, torch.Tensor):
        return tree, None
    if isinstance(tree, Mapping):
        tensors, rest = {}, {}
        for k, v in tree.items():
            t, r = split_tensors(v)
            if t is not None:
                tensors[k] = t
            if r is not None or t is None:
                rest[k] = r
        return (tensors or None), (rest or None)
    if isinstance(tree, list | tuple):
        pairs = [split_tensors(v) for v in tree]
        tensors_list = [t for t, _ in pairs]
        rest_list = [r for _, r in pairs]
        has_t = any(t is not None for t in tensors_list)
        kept = {str(i): t for i, t in enumerate(tensors_list) if t is not None}  # DCP keys by str
        return (kept if has_t else None), {"__seq__": type(tree).__name__, "items": rest_list}
    return None, tree


def merge_trees(tensors: Any, rest: Any) -> Any:
    """The inverse of :func:`split_tensors`."""
    sub = tensors if isinstance(tensors, Mapping) else {}
    if isinstance(rest, dict) and "__seq__" in rest:
        items = [merge_trees(sub.get(str(i)), r) for i, r in enumerate(rest["items"])]
        return items if rest["__seq__"] == "list" else tuple(items)
    if isinstance(rest, Mapping):
        out = {k: merge_trees(sub.get(k), v) for k, v in rest.items()}
        out.update({k: v for k, v in sub.items() if k not in out})
        return out
    return rest if tensors is None else tensors


_METADATA_MODULES = ("torch.distributed.checkpoint.metadata",)
_ALLOWED = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Admits DCP's metadata classes, torch sizes, dtypes, layouts and memory formats; nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or module in _METADATA_MODULES:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype | torch.memory_format):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint's metadata")


@contextlib.contextmanager
def _one_process() -> Any:
    """DCP warns on every save and load without a process group, which is what one process means here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _reader(folder: Path) -> Any:
    """DCP's file reader for ``folder``, reading the metadata with :class:`_MetadataUnpickler`."""
    from torch.distributed.checkpoint.filesystem import FileSystemReader

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            return read_metadata(folder)

    return SafeReader(str(folder))


def read_metadata(folder: Path) -> Any:
    """The DCP ``Metadata`` of ``folder``, unpickled with only DCP's own classes admitted.

    Raises:
        CheckpointCorruptError: missing, unreadable, or it names anything else (a damaged or hostile copy).
    """
    path = folder / DCP_METADATA
    try:
        metadata = _MetadataUnpickler(io.BytesIO(path.read_bytes())).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as err:
        raise CheckpointCorruptError(f"{path}: the sharded state's metadata cannot be read: {err}") from err
    if type(metadata).__name__ != "Metadata":
        raise CheckpointCorruptError(f"{path} holds a {type(metadata).__name__}, not DCP metadata")
    return metadata


def _own_files(folder: Path, rank: int) -> dict[str, dict[str, Any]]:
    """SHA-256 and size of the files rank ``rank`` wrote into ``folder`` (DCP names them ``__<rank>_<n>.distcp``)."""
    out = {}
    for path in sorted(folder.glob(f"__{rank}_*.distcp")):
        digest, size = sha256_file(path)
        out[path.name] = {"sha256": digest, "bytes": size}
    return out


def start_shards(
    folder: Path, state: Mapping[str, Any], collective: GroupCollective | None, *, background: bool
) -> Any:
    """Start writing this rank's share of ``state`` (tensors only) into ``folder`` with DCP: returns a ``Future``
    (``background``: DCP's asynchronous save, which only copies the state to CPU memory before returning) or
    ``None`` once written."""
    from torch.distributed.checkpoint.filesystem import FileSystemWriter
    from torch.distributed.checkpoint.state_dict_saver import async_save, save

    writer = FileSystemWriter(str(folder), sync_files=True)
    group = collective.group if collective is not None else None
    if collective is None:
        with _one_process():
            save(dict(state), storage_writer=writer, no_dist=True)
        return None
    if background:
        return async_save(dict(state), storage_writer=writer, process_group=group)
    save(dict(state), storage_writer=writer, process_group=group)
    return None


def finish_shards(
    folder: Path, collective: GroupCollective | None, pending: Future[Any] | None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]] | None]:
    """Wait for this rank's write, hash its files, and gather every rank's list: ``(own, every)``, this rank's files
    and, on rank 0, every file of the checkpoint (DCP's metadata included; ``None`` on the other ranks). A rank whose
    write failed makes every rank raise (naming it)."""
    error = None
    try:
        if pending is not None:
            pending.result()
        rank = collective.rank if collective is not None else 0
        own: dict[str, dict[str, Any]] | str = _own_files(folder, rank)
    except Exception as err:  # reported to every rank below, so none waits forever
        error, own = err, f"{type(err).__name__}: {err}"
    every = collective.gather(own) if collective is not None else [own]
    failed = [f"rank {r}: {files}" for r, files in enumerate(every) if isinstance(files, str)]
    if failed:
        raise OSError(f"writing the sharded state failed on {'; '.join(failed)}") from error
    assert isinstance(own, dict)
    if collective is not None and collective.rank != 0:
        return own, None
    files: dict[str, dict[str, Any]] = {}
    for own_files in every:
        assert isinstance(own_files, dict)
        files.update(own_files)
    digest, size = sha256_file(folder / DCP_METADATA)
    files[DCP_METADATA] = {"sha256": digest, "bytes": size}
    fsync_dir(folder)
    return own, files


def shard_rank(name: str) -> int | None:
    """The rank that wrote DCP file ``name`` (``__<rank>_<n>.distcp``); ``None`` for the metadata."""
    head = name[2:].split("_", 1)[0] if name.startswith("__") else ""
    return int(head) if head.isdigit() else None


def invisible_ranks(folder: Path, files: Mapping[str, Mapping[str, Any]]) -> list[int]:
    """The ranks whose files (listed in ``files``) are not in ``folder`` with their size, as rank 0 sees it: ranks on
    other machines, without a filesystem shared with rank 0."""
    ranks = set()
    for name, entry in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            rank = shard_rank(name)
            if rank is not None:
                ranks.add(rank)
    return sorted(ranks)


def write_shards(
    folder: Path, state: Mapping[str, Any], collective: GroupCollective | None
) -> dict[str, dict[str, Any]] | None:
    """Write and hash synchronously: :func:`start_shards` then :func:`finish_shards`."""
    folder.mkdir(parents=True, exist_ok=True)
    return finish_shards(folder, collective, start_shards(folder, state, collective, background=False))[1]


def _set_path(root: dict[Any, Any], path: tuple[Any, ...], value: Any) -> None:
    node = root
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


class ShardedState:
    """The sharded state of a (verified) checkpoint: its DCP folder, read in full or into a sharded target."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def shapes(self, prefix: str) -> dict[str, torch.Tensor]:
        """Each saved tensor under ``prefix.`` (e.g. ``'model'``) as an empty ``meta`` tensor of its global shape
        and dtype, keyed by the rest of its name (what a compatibility check compares, without reading data)."""
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        start = prefix + "."
        out = {}
        for key, meta in read_metadata(self.folder).state_dict_metadata.items():
            if key.startswith(start) and isinstance(meta, TensorStorageMetadata):
                out[key[len(start) :]] = torch.empty(meta.size, dtype=meta.properties.dtype, device="meta")
        return out

    def _check_covered(self, target: Mapping[str, Any]) -> None:
        """Every saved tensor under ``target``'s top-level keys must have a place in it: a target missing some (e.g.
        an optimizer whose state is not initialized) would leave them unloaded, silently."""
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        have: set[str] = set()

        def walk(node: Any, path: str) -> None:
            if isinstance(node, Mapping):
                for k, v in node.items():
                    walk(v, f"{path}.{k}")
            elif isinstance(node, torch.Tensor):
                have.add(path[1:])

        walk(target, "")
        saved = read_metadata(self.folder).state_dict_metadata
        parts = tuple(f"{part}." for part in target)
        lost = sorted(
            k
            for k, m in saved.items()
            if isinstance(m, TensorStorageMetadata) and k.startswith(parts) and k not in have
        )
        if lost:
            more = f" (+{len(lost) - 5} more)" if len(lost) > 5 else ""
            raise CheckpointIncompatibleError(
                f"{self.folder.parent.name}: the state being loaded into has no place for {', '.join(lost[:5])}{more} "
                "(an optimizer with a different state, or a model with fewer tensors); nothing was loaded"
            )

    def read(self, target: Any = None, *, collective: GroupCollective | None = None) -> Any:
        """The saved tensors: ``target=None``: every one, whole, as plain CPU tensors in the saved nesting (a list
        comes back as a dict keyed by str(index), as :func:`split_tensors` makes it; one process, no process group);
        else loaded in place into ``target``'s tensors (e.g. this rank's DTensor shards, any world size: DCP
        reshards), which is returned. Collective with ``target`` when a
        process group is given."""
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata
        from torch.distributed.checkpoint.state_dict_loader import load

        reader = _reader(self.folder)
        if target is not None:
            self._check_covered(target)
            group = collective.group if collective is not None else None
            with _one_process() if collective is None else contextlib.nullcontext():
                load(target, storage_reader=reader, process_group=group, no_dist=collective is None)
            return target
        metadata = read_metadata(self.folder)
        flat = {
            key: torch.empty(meta.size, dtype=meta.properties.dtype)
            for key, meta in metadata.state_dict_metadata.items()
            if isinstance(meta, TensorStorageMetadata)
        }
        with _one_process():
            load(flat, storage_reader=reader, no_dist=True)
        paths = metadata.planner_data or {}
        tree: dict[Any, Any] = {}
        for key, tensor in flat.items():
            _set_path(tree, tuple(paths.get(key, (key,))), tensor)
        return tree


def shard_bytes(state: Any) -> int:
    """This rank's bytes of ``state``'s tensors (a DTensor counts its local shard)."""
    if isinstance(state, torch.Tensor):
        local = getattr(state, "to_local", None)
        t = local() if local is not None else state
        return int(t.numel() * t.element_size())
    if isinstance(state, Mapping):
        return sum(shard_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(shard_bytes(v) for v in state)
    return 0
