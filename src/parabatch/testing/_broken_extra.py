"""Known-broken subjects for the isolation and copies-alive properties.

Each is the core batch node run on a chain that keeps one thing the way a real
implementation gets it wrong: a copy of the chain per worker thread instead of per item,
one store per worker thread, one namespace per item instead of per attempt, every copy
kept, every failure kept with its traceback. The bug sits in the chain the subject hands
the core (``_Broken*`` below), through the public constructor and the deep-copy protocol
only, so these controls do not depend on how the core is built inside. Each class's
``catches`` names the property that must flag it.

Example:
    >>> from parabatch.testing._broken_extra import BROKEN_EXTRA
    >>> sorted((name, cls.catches) for name, cls in BROKEN_EXTRA.items())[:2]
    [('chain_per_worker', 'isolation'), ('keeps_copies', 'copies')]
"""

from __future__ import annotations

import copy
import threading
from collections.abc import MutableMapping
from typing import Any, ClassVar

from parabatch import PflowBatchNode, Shared

__all__ = [
    "BROKEN_EXTRA",
    "ChainPerWorker",
    "KeepsCopies",
    "KeepsTracebacks",
    "NamespacePerItem",
    "StorePerWorker",
]


class _Chain:
    """Stands for the chain the core runs: delegates to it, copies as the bug says."""

    def __init__(self, chain: Any) -> None:
        self.chain = chain
        self.node_id: str = chain.node_id

    def __getattr__(self, name: str) -> Any:
        # Dunder names are not delegated: copy and pickle probe them on half-built objects.
        if name.startswith("__") or name == "chain":
            raise AttributeError(name)
        return getattr(self.__dict__["chain"], name)

    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        return self.chain._run(shared)


class _PerWorkerCopy(_Chain):
    def __init__(self, chain: Any) -> None:
        super().__init__(chain)
        self.local = Shared(threading.local())

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # The bug: "a copy per worker" — each thread reuses the copy it made first.
        local = self.local.value
        mine = getattr(local, "chain", None)
        if mine is None:
            mine = local.chain = copy.deepcopy(self.chain, memo)
        return mine


class _PerWorkerStore(_Chain):
    def __init__(self, chain: Any) -> None:
        super().__init__(chain)
        self.local = Shared(threading.local())

    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        # The bug: one store per worker thread, refreshed from the item's, never replaced,
        # so whatever an earlier item wrote at its root is still there.
        local = self.local.value
        store = getattr(local, "store", None)
        if store is None:
            store = local.store = {}
        store.update(shared)
        try:
            return self.chain._run(store)
        finally:
            shared[self.node_id] = store[self.node_id]


class _NamespacePerItem(_Chain):
    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        # The bug: the item's namespace is made once, not on every attempt, so a retry
        # starts with what the failed attempt wrote.
        kept = self.__dict__.get("namespace")
        if kept is None:
            self.namespace = shared[self.node_id]
        else:
            shared[self.node_id] = kept
        return self.chain._run(shared)


class _KeepsCopies(_Chain):
    def __init__(self, chain: Any) -> None:
        super().__init__(chain)
        self.made: Shared[list[Any]] = Shared([])

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # The bug: every copy is kept (a cache that is never evicted).
        mine = copy.deepcopy(self.chain, memo)
        self.made.value.append(mine)
        return mine


class _KeepsTracebacks(_Chain):
    def __init__(self, chain: Any) -> None:
        super().__init__(chain)
        self.failures: Shared[list[BaseException]] = Shared([])

    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        try:
            return self.chain._run(shared)
        except Exception as exc:
            # The bug: failures kept for a report, tracebacks and all: each traceback
            # holds the frames that ran on a copy of the chain, and so the copy.
            self.failures.value.append(exc)
            raise


class _Broken(PflowBatchNode):
    #: the property whose check must flag this subject
    catches: ClassVar[str] = ""
    chain_class: ClassVar[type[_Chain]] = _Chain

    def __init__(self, inner_node: Any, node_id: str, batch_config: dict[str, Any], **kw: Any):
        super().__init__(self.chain_class(inner_node), node_id, batch_config, **kw)


class ChainPerWorker(_Broken):
    """One copy of the chain per worker thread, reused by every item that thread runs."""

    catches = "isolation"
    chain_class = _PerWorkerCopy


class StorePerWorker(_Broken):
    """One store per worker thread, refreshed from each item's but never replaced."""

    catches = "isolation"
    chain_class = _PerWorkerStore


class NamespacePerItem(_Broken):
    """The item's namespace made once per item: a retry begins with the failed attempt's."""

    catches = "isolation"
    chain_class = _NamespacePerItem


class KeepsCopies(_Broken):
    """Every copy of the chain kept for the whole run."""

    catches = "copies"
    chain_class = _KeepsCopies


class KeepsTracebacks(_Broken):
    """Every failure kept with its traceback, which keeps the failed item's copy alive."""

    catches = "copies"
    chain_class = _KeepsTracebacks


#: name -> known-broken subject for the isolation and copies-alive properties
BROKEN_EXTRA: dict[str, type[PflowBatchNode]] = {
    "chain_per_worker": ChainPerWorker,
    "store_per_worker": StorePerWorker,
    "namespace_per_item": NamespacePerItem,
    "keeps_copies": KeepsCopies,
    "keeps_tracebacks": KeepsTracebacks,
}
