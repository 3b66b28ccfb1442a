"""Datasets over the crop cache: labelled onset/apex pairs and pre-training expansion sets.

The crop cache (CONTRACTS.md; written by train.cache for the licensed releases and by
train.synth for generated pairs) is an index.csv of aligned 224x224 onset/apex crops.
Training maps each raw label to the classes of a protocol (core/protocols.py) here, at
load time, so one cache serves every protocol. A sample whose label a protocol drops
(e.g. CASME II "fear" under the composite) is removed AND counted: ``LabelledIndex.dropped``
holds how many and why, and the trainers print and report it.

What the network sees (MOEXT.md, "Data for each phase"):
- ``PairDataset``: micro-expression pairs for fine-tuning and testing. Images are RGB
  scaled to [0, 1], then normalised with the config's mean/std, as float32 (3, 224, 224).
  With ``augment="finetune"`` each pair appears ``repeats`` (10) times per epoch: the
  original once and mirrored / rotated (+-10 deg) copies, the same transform on onset and
  apex (train/augment.py).
- ``PretrainDataset``: label-free micro AND macro pairs (for a macro-expression the cache's
  apex is the 5th-frame pseudo-apex). Each pair becomes an onset expansion set and an
  apex expansion set of m = 3 views (the frame itself and two augmented views, one
  operation each; view j uses the same random parameters on onset and apex), plus the apex
  views in [0, 1] (view 0, the set's own apex, is the reconstruction target by default).

Loaders only decode crops (uint8); conversion, augmentation and normalisation run batched
on the training device (``prepare_batch``). Randomness is drawn from (seed, epoch, index)
per item, so a run is reproducible from its seed whatever the number of loader workers or
DDP processes, and a resumed run sees the same data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from core import protocols
from core.contract import NORM_MEAN, NORM_STD
from train import augment
from train.cache import load_pair, read_cache

# ---------------------------------------------------------------------------------------
# index and labels


def _as_list(cache_dirs) -> list[Path]:
    if isinstance(cache_dirs, (str, Path)):
        return [Path(cache_dirs)]
    return [Path(c) for c in cache_dirs]


def load_index(cache_dirs) -> pd.DataFrame:
    """Concatenate the index of one or several caches; a ``cache_dir`` column says where each row lives."""
    frames = []
    for d in _as_list(cache_dirs):
        if not (d / "index.csv").is_file():
            raise FileNotFoundError(
                f"{d}: no index.csv; build a crop cache first (python -m train.cache ... --out {d}, "
                f"or python -m train.synth pairs --out {d})"
            )
        df = read_cache(d).copy()
        df["cache_dir"] = str(d)
        frames.append(df)
    if not frames:
        raise ValueError("no cache directory given: pass at least one --cache DIR")
    df = pd.concat(frames, ignore_index=True)
    for col in ("dataset", "subject", "sample", "kind", "raw_label"):
        df[col] = df[col].astype(str)
    dup = df.duplicated(["dataset", "subject", "sample", "kind"], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise ValueError(
            f"{int(dup.sum())} rows repeat the same (dataset, subject, sample, kind), e.g. "
            f"{first['dataset']}/{first['subject']}/{first['sample']} in {first['cache_dir']}; "
            "the same cache was probably passed twice"
        )
    return df


def label_table(protocol: str, dataset: str) -> dict[str, str | None]:
    """The raw-label -> class map that ``protocol`` applies to rows of ``dataset``."""
    if protocol not in protocols.PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(protocols.PROTOCOLS)}")
    if protocol == "casme2":
        return protocols.CASME2_TO_5
    if protocol == "samm":
        return protocols.SAMM_TO_5
    if protocol == "casme3":
        return protocols.CASME3_TO_3
    if protocol == "composite":
        if dataset not in protocols.COMPOSITE_FROM:
            raise ValueError(
                f"dataset {dataset!r} has no composite label map; the composite takes "
                f"{sorted(protocols.COMPOSITE_FROM)}"
            )
        return protocols.COMPOSITE_FROM[dataset]
    # "demo": synthetic (or user) data whose raw labels already are the demo classes
    return {c: c for c in protocols.PROTOCOLS[protocol]}


@dataclass
class LabelledIndex:
    """Rows kept under a protocol (with an int ``label`` column) and what was dropped."""

    rows: pd.DataFrame
    classes: tuple[str, ...]
    dropped: dict[str, int] = field(default_factory=dict)  # "dataset/raw_label" -> count

    @property
    def n_dropped(self) -> int:
        return int(sum(self.dropped.values()))

    def summary(self) -> str:
        lines = [f"{len(self.rows)} samples kept under {len(self.classes)} classes {self.classes}"]
        if len(self.rows):
            counts = self.rows.groupby(["dataset", "class"]).size().unstack(fill_value=0)
            lines.append(counts.to_string())
        if self.dropped:
            why = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items()))
            lines.append(f"{self.n_dropped} samples dropped (label not in the protocol's classes): {why}")
        return "\n".join(lines)


def attach_labels(df: pd.DataFrame, protocol: str) -> LabelledIndex:
    """Map raw labels to class indices; drop (and count) the labels the protocol leaves out."""
    classes = protocols.PROTOCOLS[protocol] if protocol in protocols.PROTOCOLS else None
    if classes is None:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(protocols.PROTOCOLS)}")
    names, dropped = [], {}
    for i, r in enumerate(df.itertuples(index=False)):
        where = f"{r.cache_dir}/index.csv row {i + 2} ({r.dataset}/{r.sample}, column raw_label)"
        name = protocols.map_label(r.raw_label, label_table(protocol, r.dataset), where=where)
        if name is None:
            key = f"{r.dataset}/{r.raw_label}"
            dropped[key] = dropped.get(key, 0) + 1
        names.append(name)
    out = df.copy()
    out["class"] = names
    out = out[out["class"].notna()].reset_index(drop=True)
    out["label"] = [classes.index(c) for c in out["class"]]
    return LabelledIndex(out, tuple(classes), dropped)


def select_rows(df: pd.DataFrame, subjects: Iterable[str] | None = None,
                exclude_subjects: Iterable[str] | None = None,
                kinds: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of the given subjects (all if None), minus excluded subjects, of the given kinds."""
    m = np.ones(len(df), dtype=bool)
    if subjects is not None:
        subjects = set(subjects)
        unknown = subjects - set(df["subject"])
        if unknown:
            raise ValueError(f"subjects not in the cache: {sorted(unknown)[:5]}; "
                             f"known subjects look like {sorted(set(df['subject']))[:3]}")
        m &= df["subject"].isin(subjects).to_numpy()
    if exclude_subjects:
        m &= ~df["subject"].isin(set(exclude_subjects)).to_numpy()
    if kinds is not None:
        m &= df["kind"].isin(set(kinds)).to_numpy()
    return df[m].reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# image helpers


def to_tensor01(img_rgb_u8: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img_rgb_u8)).permute(2, 0, 1).float().div_(255.0)


def to_chw_u8(img_rgb_u8: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) uint8 tensor (what the loaders ship to the device)."""
    return torch.from_numpy(np.ascontiguousarray(img_rgb_u8)).permute(2, 0, 1).contiguous()


def u8_to_01(x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 in [0, 1] on ``device`` (the conversion happens there)."""
    return x.to(device, non_blocking=True).float().div_(255.0)


def normalize(x01: torch.Tensor, mean=NORM_MEAN, std=NORM_STD) -> torch.Tensor:
    """(..., 3, H, W) in [0, 1] -> normalised with per-channel mean/std (on x01's device)."""
    m = torch.tensor(mean, dtype=x01.dtype, device=x01.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x01.dtype, device=x01.device).view(3, 1, 1)
    return (x01 - m) / s


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class _PairStore:
    """Loads (onset, apex) RGB uint8 crops of index rows, optionally keeping them in memory."""

    def __init__(self, rows: pd.DataFrame, preload: bool = False):
        self.rows = rows.reset_index(drop=True)
        self._mem: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.preload = preload

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i in self._mem:
            return self._mem[i]
        row = self.rows.iloc[i]
        onset, apex = load_pair(row["cache_dir"], row)
        if self.preload:
            self._mem[i] = (onset, apex)
        return onset, apex


def _rows_from(source, protocol: str | None, subjects, exclude_subjects, kinds) -> tuple[pd.DataFrame, LabelledIndex | None]:
    if isinstance(source, pd.DataFrame):
        df = source
        info = None
    else:
        df = load_index(source)
        info = None
        if protocol is not None:
            info = attach_labels(df, protocol)
            df = info.rows
    return select_rows(df, subjects, exclude_subjects, kinds), info


def _indices(idx) -> list[int]:
    return [int(i) for i in (idx.tolist() if torch.is_tensor(idx) else idx)]


# ---------------------------------------------------------------------------------------
# datasets
#
# Both datasets have two forms. ``raw=True`` (what the trainers use): an item is
# (index, onset, apex[, label]) with (3, H, W) uint8 crops; the loader only decodes, and
# ``prepare_batch`` converts, augments and normalises the whole batch on the training
# device with parameters drawn from (seed, epoch, index). ``raw=False``: an item is the
# prepared float form of one pair (the same ``prepare_batch`` on a batch of 1, on the CPU).


class PairDataset(Dataset):
    """Labelled onset/apex pairs: item -> (onset (3,H,W), apex (3,H,W), label int).

    ``source`` is a cache directory, a list of them, or an already labelled index table
    (``attach_labels(...).rows``, possibly with permuted labels). ``augment="finetune"``
    yields ``repeats`` copies of every pair per epoch (copy 0 is the pair as cached).
    With ``raw=True`` an item is (index, onset uint8, apex uint8, label); see prepare_batch.
    """

    def __init__(self, source, protocol: str | None = "demo", subjects=None, exclude_subjects=None,
                 kinds: Sequence[str] | None = ("micro",), augment: str | None = None, repeats: int = 10,
                 mean=NORM_MEAN, std=NORM_STD, preload: bool = False, seed: int = 0, raw: bool = False):
        rows, self.labelled = _rows_from(source, protocol, subjects, exclude_subjects, kinds)
        if "label" not in rows.columns:
            raise ValueError("PairDataset needs labelled rows: pass a protocol or attach_labels(...).rows")
        if augment not in (None, "finetune"):
            raise ValueError(f"augment must be None or 'finetune', got {augment!r}")
        self.store = _PairStore(rows, preload)
        self.rows = self.store.rows
        self.labels = self.rows["label"].to_numpy(dtype=np.int64)
        self.augment = augment
        self.repeats = repeats if augment == "finetune" else 1
        self.mean, self.std = tuple(mean), tuple(std)
        self.seed, self.epoch = seed, 0
        self.raw = raw

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store) * self.repeats

    def __getitem__(self, i: int):
        k = i % len(self.store)
        onset, apex = self.store.get(k)
        o, a = to_chw_u8(onset), to_chw_u8(apex)
        if self.raw:
            return i, o, a, int(self.labels[k])
        x_o, x_a = self.prepare_batch(o[None], a[None], [i], self.epoch, "cpu")
        return x_o[0], x_a[0], int(self.labels[k])

    def prepare_batch(self, onset_u8: torch.Tensor, apex_u8: torch.Tensor, indices, epoch: int,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, 3, H, W) onset / apex of items ``indices`` -> normalised float32 on
        ``device``; copies 1.. of a pair get the mirror / rotation of (seed, epoch, index)."""
        o, a = u8_to_01(onset_u8, device), u8_to_01(apex_u8, device)
        if self.augment == "finetune":
            n = len(self.store)
            rngs = [item_rng(self.seed, epoch, i) if i // n > 0 else None for i in _indices(indices)]
            if any(r is not None for r in rngs):
                flips, angles = augment.draw_finetune_batch(rngs)
                o, a = augment.finetune_batch(o, a, flips, angles)
        return normalize(o, self.mean, self.std), normalize(a, self.mean, self.std)


class PretrainDataset(Dataset):
    """Label-free pairs as expansion sets: item -> (onset_views, apex_views, apex_targets).

    onset_views, apex_views: (m, 3, H, W) normalised; apex_targets: (m, 3, H, W) in [0, 1],
    the apex views (MOEXT.md, "Losses"; L_re uses view 0, the set's own apex, by default).
    View 0 is the frame itself; views 1..m-1 use ``ops_per_view`` operation(s) each.
    With ``raw=True`` an item is (index, onset uint8, apex uint8); see prepare_batch.
    """

    def __init__(self, source, subjects=None, exclude_subjects=None,
                 kinds: Sequence[str] | None = ("micro", "macro"), views: int = 3,
                 mean=NORM_MEAN, std=NORM_STD, preload: bool = False, seed: int = 0, raw: bool = False,
                 ops_per_view: int = augment.OPS_PER_VIEW):
        rows, _ = _rows_from(source, None, subjects, exclude_subjects, kinds)
        if len(rows) == 0:
            raise ValueError("no pre-training pairs left after selecting subjects and kinds "
                             f"(kinds={kinds}, excluded={sorted(exclude_subjects or [])[:5]})")
        if views < 1:
            raise ValueError(f"views (m) must be >= 1, got {views}")
        self.store = _PairStore(rows, preload)
        self.rows = self.store.rows
        self.views = views
        self.ops_per_view = ops_per_view
        self.mean, self.std = tuple(mean), tuple(std)
        self.seed, self.epoch = seed, 0
        self.raw = raw

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int):
        onset, apex = self.store.get(i)
        o, a = to_chw_u8(onset), to_chw_u8(apex)
        if self.raw:
            return i, o, a
        ov, av, t = self.prepare_batch(o[None], a[None], [i], self.epoch, "cpu")
        return ov[0], av[0], t[0]

    def prepare_batch(self, onset_u8: torch.Tensor, apex_u8: torch.Tensor, indices, epoch: int,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 (n, 3, H, W) onset / apex of items ``indices`` -> onset_views, apex_views
        (n, m, 3, H, W) normalised and apex_targets (n, m, 3, H, W) in [0, 1], on ``device``;
        the views of item i use the parameters of (seed, epoch, i)."""
        o, a = u8_to_01(onset_u8, device), u8_to_01(apex_u8, device)
        rngs = [item_rng(self.seed, epoch, i) for i in _indices(indices)]
        vo, va = augment.expand_views(o, a, augment.draw_view_batch(rngs, self.views, self.ops_per_view))
        return normalize(vo, self.mean, self.std), normalize(va, self.mean, self.std), va
