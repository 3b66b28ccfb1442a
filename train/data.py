"""Datasets over the crop cache: labelled onset/apex pairs and pre-training expansion sets.

The crop cache (CONTRACTS.md; written by train.cache for the licensed releases and by
train.synth for generated pairs) is an index.csv of aligned 224x224 onset/apex crops.
Training maps each raw label to the classes of a protocol (train/protocols.py) here, at
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
  apex expansion set of m = 3 views (the frame itself and two augmented views; view j uses
  the same random parameters on onset and apex), plus the apex views in [0, 1] as the
  reconstruction targets.

Randomness is drawn from (seed, epoch, index) per item, so a run is reproducible from its
seed whatever the number of loader workers, and a resumed run sees the same data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from engines.contract import NORM_MEAN, NORM_STD
from train import protocols

# ---------------------------------------------------------------------------------------
# index and labels


def _as_list(cache_dirs) -> list[Path]:
    if isinstance(cache_dirs, (str, Path)):
        return [Path(cache_dirs)]
    return [Path(c) for c in cache_dirs]


def load_index(cache_dirs) -> pd.DataFrame:
    """Concatenate the index of one or several caches; a ``cache_dir`` column says where each row lives."""
    from train.cache import read_cache

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


def normalize(x01: torch.Tensor, mean=NORM_MEAN, std=NORM_STD) -> torch.Tensor:
    """(..., 3, H, W) in [0, 1] -> normalised with per-channel mean/std."""
    m = torch.tensor(mean, dtype=x01.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=x01.dtype).view(3, 1, 1)
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
        from train.cache import load_pair

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


# ---------------------------------------------------------------------------------------
# datasets


class PairDataset(Dataset):
    """Labelled onset/apex pairs: item -> (onset (3,H,W), apex (3,H,W), label int).

    ``source`` is a cache directory, a list of them, or an already labelled index table
    (``attach_labels(...).rows``, possibly with permuted labels). ``augment="finetune"``
    yields ``repeats`` copies of every pair per epoch (copy 0 is the pair as cached).
    """

    def __init__(self, source, protocol: str | None = "demo", subjects=None, exclude_subjects=None,
                 kinds: Sequence[str] | None = ("micro",), augment: str | None = None, repeats: int = 10,
                 mean=NORM_MEAN, std=NORM_STD, preload: bool = False, seed: int = 0):
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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store) * self.repeats

    def __getitem__(self, i: int):
        n = len(self.store)
        k, copy = i % n, i // n
        onset, apex = self.store.get(k)
        if self.augment == "finetune" and copy > 0:
            from train import augment

            onset, apex = augment.finetune_augment(onset, apex, item_rng(self.seed, self.epoch, i))
        x_o = normalize(to_tensor01(onset), self.mean, self.std)  # (3, H, W)
        x_a = normalize(to_tensor01(apex), self.mean, self.std)
        return x_o, x_a, int(self.labels[k])


class PretrainDataset(Dataset):
    """Label-free pairs as expansion sets: item -> (onset_views, apex_views, apex_targets).

    onset_views, apex_views: (m, 3, H, W) normalised; apex_targets: (m, 3, H, W) in [0, 1],
    the reconstruction targets (MOEXT.md, "Losses"). View 0 is the frame itself.
    """

    def __init__(self, source, subjects=None, exclude_subjects=None,
                 kinds: Sequence[str] | None = ("micro", "macro"), views: int = 3,
                 mean=NORM_MEAN, std=NORM_STD, preload: bool = False, seed: int = 0):
        rows, _ = _rows_from(source, None, subjects, exclude_subjects, kinds)
        if len(rows) == 0:
            raise ValueError("no pre-training pairs left after selecting subjects and kinds "
                             f"(kinds={kinds}, excluded={sorted(exclude_subjects or [])[:5]})")
        self.store = _PairStore(rows, preload)
        self.rows = self.store.rows
        self.views = views
        self.mean, self.std = tuple(mean), tuple(std)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int):
        from train import augment

        onset, apex = self.store.get(i)
        pairs = augment.expansion_views(onset, apex, self.views, item_rng(self.seed, self.epoch, i))
        o = torch.stack([to_tensor01(a) for a, _ in pairs])  # (m, 3, H, W) in [0, 1]
        a = torch.stack([to_tensor01(b) for _, b in pairs])
        return normalize(o, self.mean, self.std), normalize(a, self.mean, self.std), a
