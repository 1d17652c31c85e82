"""The model registry: retrained versions and which one is served, where every app process sees it.

Versions live beside the relabeled images — `FACEXPR_DATA_DIR/models/` by default, or
`s3://BUCKET/<parent of FACEXPR_S3_PREFIX>/models/` when S3 is configured — as `NAME.keras` +
`NAME.json` (the card) and, when it was exported, `NAME.tflite` (what LiteRT serves), with
`registry.json` saying which version is served and every promotion and rollback. Each process
reads that file, so replicas agree on the served model. An empty registry (nothing promoted, or
everything rolled back) serves the shipped model in `models/`; FACEXPR_MODEL still overrides both.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facexpr.core.config import Settings
from facexpr.core.errors import FacexprError, ModelError
from facexpr.model.classifier import ModelCard
from facexpr.model.lite import SUFFIX as LITE
from facexpr.model.lite import lite_path
from facexpr.storage.store import LocalStore, StoreError, StoreUnavailable, atomic_write, open_store

log = logging.getLogger(__name__)

MODELS = "models"
STATE_KEY = "registry.json"
CACHE_DIR = "model-cache"  # under FACEXPR_DATA_DIR: S3 versions are downloaded here to be loaded
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def models_uri(settings: Settings) -> str:
    """The model store: a sibling `models/` of the relabeled prefix in S3, else `data_dir/models`."""
    if settings.s3_bucket:
        parent = settings.s3_prefix.strip("/").rpartition("/")[0]
        return f"s3://{settings.s3_bucket}/{parent + '/' if parent else ''}{MODELS}/"
    return str(Path(settings.data_dir) / MODELS)


def check_name(name: str) -> str:
    if not _NAME.match(name or "") or name.endswith((".keras", ".json")):
        raise ModelError(f"{name!r} is not a model name: use letters, digits, '.', '_' or '-' "
                         "(no folder, no extension).")
    return name


@dataclass
class RegistryState:
    """What registry.json holds: the stack of served versions (last = served), the candidate that
    answers in shadow beside the served one (never shown, never served), and the log."""

    stack: list[str] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    shadow: str | None = None

    @property
    def served(self) -> str | None:
        return self.stack[-1] if self.stack else None

    def to_json(self) -> bytes:
        return json.dumps({"served": self.served, "stack": self.stack, "shadow": self.shadow,
                           "log": self.log}, indent=2).encode()

    @staticmethod
    def from_json(data: bytes) -> RegistryState:
        raw = json.loads(data)
        return RegistryState(list(raw.get("stack", [])), list(raw.get("log", [])),
                             raw.get("shadow") or None)


@dataclass(frozen=True)
class Version:
    """One row of `python -m facexpr models`."""

    name: str
    base: str | None
    created: str | None
    val_accuracy: float | None
    corrections_accuracy: float | None  # cross-fitted (held-out in cards written before cross-fitting)
    guardrail: bool | None  # None: the card has no verdict
    served: bool


class ModelRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.uri = models_uri(settings)
        self.store = open_store(self.uri)
        self.cache = Path(settings.data_dir) / CACHE_DIR

    # -- state

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Promotions from two local processes never interleave their read-modify-write."""
        if not isinstance(self.store, LocalStore):
            yield  # S3 has no lock: the last promotion wins, and the log keeps both
            return
        root = Path(self.uri)
        root.mkdir(parents=True, exist_ok=True)
        with open(root / ".registry.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def state(self) -> RegistryState:
        """The registry's state; when S3 cannot be reached, the last state this machine read."""
        mirror = self.cache / STATE_KEY
        try:
            if not self.store.exists(STATE_KEY):
                return RegistryState()
            data = self.store.get(STATE_KEY)
        except StoreUnavailable:
            if mirror.exists():
                log.warning("model registry %s unreachable: serving its last known state", self.uri)
                return RegistryState.from_json(mirror.read_bytes())
            raise
        self._mirror(data)
        return RegistryState.from_json(data)

    def served(self) -> str | None:
        return self.state().served

    def _write(self, state: RegistryState) -> None:
        data = state.to_json()
        self.store.put(STATE_KEY, data, {"served": state.served or ""})
        self._mirror(data)

    def _mirror(self, data: bytes) -> None:
        """Keep the last state seen from S3 on this machine, to serve through an S3 outage."""
        if not isinstance(self.store, LocalStore):
            try:
                atomic_write(self.cache / STATE_KEY, data)
            except OSError:
                pass  # only a fallback for outages

    # -- versions

    def names(self) -> list[str]:
        keys = set(self.store.list_keys())
        return sorted(k[:-len(".keras")] for k in keys
                      if k.endswith(".keras") and "/" not in k and k[:-len(".keras")] + ".json" in keys)

    def card(self, name: str) -> dict[str, Any]:
        check_name(name)
        try:
            text = self.store.get(f"{name}.json").decode("utf-8", errors="replace")
        except StoreError as exc:
            raise ModelError(f"No model {name!r} in the model store {self.uri}.") from exc
        return ModelCard.from_json(text, name).to_dict()  # checked like any card, every section kept

    def add(self, keras_path: Path) -> str:
        """Put KERAS_PATH, its LiteRT file (when exported) and its card into the store (the card
        last: a listed version is complete)."""
        keras_path = Path(keras_path)
        name = check_name(keras_path.stem)
        if name in self.names():
            raise ModelError(f"The model store {self.uri} already has a version named {name!r}.")
        self.store.put(f"{name}.keras", keras_path.read_bytes())
        if lite_path(keras_path).is_file():
            self.store.put(f"{name}{LITE}", lite_path(keras_path).read_bytes())
        self.store.put(f"{name}.json", keras_path.with_suffix(".json").read_bytes())
        return name

    def update_card(self, name: str, card: dict[str, Any]) -> None:
        self.store.put(f"{name}.json", (json.dumps(card, indent=2) + "\n").encode())

    def discard(self, name: str) -> None:
        """Remove a version that is not served and never was (history stays readable); a discarded
        shadow candidate stops answering beside the served model."""
        state = self.state()
        if name in state.stack:
            raise ModelError(f"{name} is served or may be rolled back to; it cannot be discarded.")
        self.card(name)
        if state.shadow == name:
            self.set_shadow(None)
        self.store.delete(f"{name}.json")  # card first: a half-removed version is never listed
        if self.store.exists(f"{name}{LITE}"):
            self.store.delete(f"{name}{LITE}")
        self.store.delete(f"{name}.keras")

    def local_path(self, name: str) -> Path:
        """The version's .keras (its .tflite and card beside it): the store's own files when local,
        else a cached download."""
        check_name(name)
        if isinstance(self.store, LocalStore):
            path = Path(self.uri) / f"{name}.keras"
            if not path.exists():
                raise ModelError(f"No model {name!r} in the model store {self.uri}.")
            return path
        path = self.cache / f"{name}.keras"
        complete = path.exists() and path.with_suffix(".json").exists()
        if not complete:  # versions never change: fetch once
            atomic_write(path, self.store.get(f"{name}.keras"))
        if not lite_path(path).exists() and self.store.exists(f"{name}{LITE}"):  # also an older cache's
            atomic_write(lite_path(path), self.store.get(f"{name}{LITE}"))
        if not complete:
            atomic_write(path.with_suffix(".json"), self.store.get(f"{name}.json"))  # the card last
        return path

    def versions(self) -> list[Version]:
        served = self.served()
        rows = []
        for name in self.names():
            card = self.card(name)
            after = card.get("after") or {}
            rows.append(Version(
                name=name, base=(card.get("base") or {}).get("name"), created=card.get("trained_at"),
                val_accuracy=after.get("val", {}).get("accuracy"),
                corrections_accuracy=_accuracy(after.get("corrections") or after.get("heldout")),
                guardrail=(card.get("guardrail") or {}).get("passed"), served=name == served))
        return sorted(rows, key=lambda v: v.created or "", reverse=True)

    # -- switching

    def promote(self, name: str, force: bool = False, now: datetime | None = None,
                evidence: str | None = None) -> RegistryState:
        """Serve NAME. Refused when its card's guardrail failed, unless FORCE (then logged as forced)
        or other EVIDENCE passed its own fixed rule (the shadow tally; logged as such). A promoted
        shadow candidate is no longer in shadow."""
        card = self.card(name)
        verdict = (card.get("guardrail") or {}).get("passed")
        if verdict is False and not force and evidence is None:
            why = card["guardrail"].get("reason", "see its card")
            raise ModelError(f"{name} failed its guardrail ({why}); "
                             "it is not served. `promote --force` overrides.")
        with self._locked():
            state = self.state()
            if state.served == name:
                return state
            state.log.append({"ts": _now(now), "action": "promote", "name": name, "previous": state.served,
                              **({"forced": True} if force and verdict is False and evidence is None else {}),
                              **({"evidence": evidence} if evidence else {})})
            state.stack.append(name)
            if state.shadow == name:
                state.shadow = None
            self._write(state)
        return state

    def set_shadow(self, name: str | None, now: datetime | None = None) -> RegistryState:
        """Let NAME (a version in the store, not the served one) answer beside the served model, its
        answers recorded but never shown; None stops the shadow. Every replica reads it here."""
        if name is not None:
            self.card(name)
        with self._locked():
            state = self.state()
            if name is not None and name == state.served:
                raise ModelError(f"{name} is served; only a candidate can answer in shadow.")
            if state.shadow == name:
                return state
            state.log.append({"ts": _now(now), "action": "shadow", "name": name, "previous": state.shadow})
            state.shadow = name
            self._write(state)
        return state

    def rollback(self, now: datetime | None = None) -> RegistryState:
        """Serve what was served before the current version (the shipped model when nothing was)."""
        with self._locked():
            state = self.state()
            if not state.stack:
                raise ModelError("Nothing to roll back: the shipped model is already served.")
            left = state.stack.pop()
            state.log.append({"ts": _now(now), "action": "rollback", "name": state.served, "previous": left})
            self._write(state)
        return state


def _now(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")


def served_model_path(settings: Settings) -> str | None:
    """What the app and CLI serve: FACEXPR_MODEL, else the registry's served version, else None
    (the caller then serves the shipped model in models/)."""
    if settings.model:
        return settings.model
    try:
        registry = ModelRegistry(settings)
        name = registry.served()
        return str(registry.local_path(name)) if name else None
    except FacexprError as exc:
        log.warning("model registry: %s; serving the shipped model", exc)
        return None


def _accuracy(figures: dict[str, Any] | None) -> float | None:
    """An accuracy from a card's figures, None where there were no faces to score (older cards
    wrote 0.0 for those)."""
    if not figures or not figures.get("n"):
        return None
    return figures.get("accuracy")
