"""The MoExt network in one file: feature separator, motion extractor, apex reconstructor.

Li, Wang, Yang, Xu, Ma, Li, Wei, "Micro-Expression Recognition by Motion Feature Extraction
based on Pre-training", arXiv 2407.07345. The paper ships no code and leaves several sizes
open; MOEXT.md (the project's design note) fixes them, and this file follows it:

    onset, apex (N, 3, 224, 224), normalised RGB
      -> FeatureSeparator F   ResNet-18 trunk (stem .. layer4)            (2N, 512, 7, 7)
                              shape branch   ConvBlock -> GAP -> FC       S: (2N, 512, 1, 1)
                              texture branch same structure, own weights  T: (2N, 512, 1, 1)
      -> MotionExtractor E    M = C2(cat(C1(|S_a - S_o|), S_a))            M: (N, 512, 1, 1)
      -> pre-training:  ApexReconstructor R(cat(M, T_o)) -> apex estimate  (N, 3, 224, 224)
                        ProjectionHead f(S), f(T) for the contrastive losses (train/losses.py)
      -> recognition:   dropout -> FC(512 -> classes) on M                 (N, classes)

Choices that are ours, not the paper's (MOEXT.md says which, and they stay configurable):
ResNet-18 as the trunk; 1x1 kernels in the motion extractor (``motion_kernel``; on 1x1 maps
a padded 3x3 kernel only uses its centre); the projection head 512 -> 1024 -> 1024 with
L2-normalised output; nearest-neighbour upsampling in R; bias-free convolutions before
every BatchNorm; the dropout rate.

Width multiplier: every channel count c of the trunk, the branches, the motion extractor
and the reconstructor becomes int(c * width) (at least 1). The image channels (3 in, 3 out)
and the spatial sizes never change, so at any width R still maps (2C, 1, 1) to
(3, 224, 224); at width 1.0 every layer is exactly the table of MOEXT.md / the paper's
Tables 1 and 2. The projection size ``proj_dim`` does not scale (set it in the config).

Parameter counts (scripts/model_info.py prints them): the recognition network has
~17.5 M parameters at width 1.0 (trunk 11.2 M, shape branch 5.0 M, motion extractor 1.3 M,
classifier C * classes) and ~4.4 M at width 0.5.

Ablation (paper, Table 7, "without motion extractor"): ``MoExtConfig(motion_extractor=False)``
builds both networks without E; M is then |S_a - S_o| itself (``motion_of``), fed straight to
the classifier's FC (and to R in a pretrainer). ``without_motion_extractor`` turns a
classifier started from a pre-training checkpoint with E into that variant.

BatchNorm in the motion extractor sees (N, C, 1, 1) maps, i.e. statistics over the batch
only: in training mode it needs at least 2 pairs per batch (use drop_last=True).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from core.contract import INPUT_SIZE, NORM_MEAN, NORM_STD
from core.protocols import DEMO_3

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# config


@dataclass
class MoExtConfig:
    """Everything that fixes the network's weights' shapes, plus its classes and input."""

    width: float = 1.0  # channel multiplier: 1.0 is the paper's network
    num_classes: int = 3
    class_names: tuple[str, ...] = DEMO_3
    input_size: int = INPUT_SIZE  # square RGB crops; R's output is fixed at 224 (Table 2)
    mean: tuple[float, float, float] = NORM_MEAN  # RGB in [0, 1]
    std: tuple[float, float, float] = NORM_STD
    dropout: float = 0.0  # before the classifier FC (our choice, MOEXT.md)
    proj_dim: int = 1024  # projection head hidden and output size (our choice, MOEXT.md)
    motion_kernel: int = 1  # 1 (our choice, 9x fewer weights) or 3 (same function on 1x1 maps)
    # False: the paper's Table 7 ablation "without motion extractor": M = |S_a - S_o| goes
    # straight to the classifier (and, in a pretrainer, to the reconstructor); no E weights.
    motion_extractor: bool = True

    def __post_init__(self):
        self.class_names = tuple(str(c) for c in self.class_names)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        self.width = float(self.width)
        if not self.width > 0:
            raise ValueError(f"MoExtConfig.width must be > 0 (1.0 = the paper's network), got {self.width}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"MoExtConfig: num_classes={self.num_classes} but {len(self.class_names)} class_names "
                f"{self.class_names}; pass matching num_classes and class_names (e.g. from core.protocols)"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"MoExtConfig.class_names has duplicates: {self.class_names}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"MoExtConfig.mean/std must be 3 RGB values with std > 0, got {self.mean} / {self.std}")
        if self.motion_kernel not in (1, 3):
            raise ValueError(f"MoExtConfig.motion_kernel must be 1 or 3, got {self.motion_kernel}")
        if self.input_size < 32:
            raise ValueError(f"MoExtConfig.input_size must be >= 32 (the trunk downsamples 32x), got {self.input_size}")
        self.motion_extractor = bool(self.motion_extractor)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MoExtConfig.dropout must be in [0, 1), got {self.dropout}")

    def scaled(self, c: int) -> int:
        """Channel count c of the width-1.0 network at this width."""
        return max(1, int(c * self.width))

    @property
    def channels(self) -> int:
        """Size of S, T and M: 512 at width 1.0."""
        return self.scaled(512)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping) -> "MoExtConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MoExtConfig fields {unknown} (known: {sorted(known)}); "
                             "the file was written by a newer version of train.moext")
        return cls(**dict(d))

    @classmethod
    def from_json(cls, s: str) -> "MoExtConfig":
        return cls.from_dict(json.loads(s))


def normalize(x01: torch.Tensor, mean=NORM_MEAN, std=NORM_STD) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (x - mean) / std per channel (the network's input)."""
    m = torch.as_tensor(mean, dtype=x01.dtype, device=x01.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=x01.dtype, device=x01.device).view(3, 1, 1)
    return (x01 - m) / s


# ---------------------------------------------------------------------------------------
# ResNet-18 trunk (He et al. 2016), plain torch. Module names follow torchvision's
# resnet18 so its state dict loads key for key (see ResNet18Trunk.load_resnet18).


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + identity)


class ResNet18Trunk(nn.Module):
    """Stem to layer4 of ResNet-18, no pooling/FC: (B, 3, 224, 224) -> (B, 512w, 7, 7)."""

    def __init__(self, cfg: MoExtConfig):
        super().__init__()
        c1, c2, c3, c4 = (cfg.scaled(c) for c in (64, 128, 256, 512))
        self.conv1 = nn.Conv2d(3, c1, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(c1, c1), BasicBlock(c1, c1))
        self.layer2 = nn.Sequential(BasicBlock(c1, c2, 2), BasicBlock(c2, c2))
        self.layer3 = nn.Sequential(BasicBlock(c2, c3, 2), BasicBlock(c3, c3))
        self.layer4 = nn.Sequential(BasicBlock(c3, c4, 2), BasicBlock(c4, c4))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):                           # (B, 3, 224, 224)
        x = F.relu(self.bn1(self.conv1(x)))         # (B, 64w, 112, 112)
        x = self.maxpool(x)                         # (B, 64w, 56, 56)
        x = self.layer1(x)                          # (B, 64w, 56, 56)
        x = self.layer2(x)                          # (B, 128w, 28, 28)
        x = self.layer3(x)                          # (B, 256w, 14, 14)
        return self.layer4(x)                       # (B, 512w, 7, 7)

    def load_resnet18(self, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load a torchvision-style ResNet-18 state dict (e.g. ImageNet weights the user
        downloaded; read it with train.checkpoint.load_state_file, weights_only). Keys may
        carry a "module." / "backbone." / "_orig_mod." prefix; "fc.*" is ignored.

        Returns (missing, unexpected) trunk keys and logs them. Raises ValueError naming
        the first keys whose shapes differ (a width other than 1.0 cannot take them)."""
        own = self.state_dict()
        mapped, unexpected = {}, []
        for k, v in state.items():
            key = _strip_prefixes(k, ("module.", "_orig_mod.", "backbone.", "model."))
            if key.startswith("fc."):
                continue
            if key in own:
                mapped[key] = v
            else:
                unexpected.append(k)
        bad = [f"{k}: {tuple(v.shape)} given vs {tuple(own[k].shape)} expected"
               for k, v in mapped.items() if tuple(v.shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(
                f"ResNet-18 weights do not fit this trunk ({len(bad)} shape mismatches, e.g. {bad[:3]}); "
                "ImageNet ResNet-18 weights need width=1.0"
            )
        missing = sorted(set(own) - set(mapped))
        self.load_state_dict(mapped, strict=False)
        log.info("ResNet-18 trunk: loaded %d tensors; missing %s; unexpected %s", len(mapped), missing, unexpected)
        return missing, unexpected


def _strip_prefixes(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


# ---------------------------------------------------------------------------------------
# the paper's building blocks


class ConvBlock(nn.Module):
    """[Conv(c_out, k x k, stride 1, 'same' padding), BN, ReLU] x 2 (paper, Table 1)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3):
        super().__init__()
        p = kernel // 2
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel, 1, p, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, kernel, 1, p, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )

    def forward(self, x):                           # (B, c_in, h, w)
        return self.net(x)                          # (B, c_out, h, w)


class Branch(nn.Module):
    """Shape or texture branch: ConvBlock(C) -> global average pool -> FC(C), held as Cx1x1."""

    def __init__(self, c: int):
        super().__init__()
        self.block = ConvBlock(c, c)
        self.fc = nn.Linear(c, c)

    def forward(self, x):                           # (B, C, 7, 7)
        x = self.block(x)                           # (B, C, 7, 7)
        x = x.mean(dim=(2, 3))                      # (B, C)
        return self.fc(x)[:, :, None, None]         # (B, C, 1, 1)


class FeatureSeparator(nn.Module):
    """F: frame -> (shape S, texture T). With ``texture=False`` only S is computed (the
    recognition network); the module names stay the same so weights move across."""

    def __init__(self, cfg: MoExtConfig, texture: bool = True):
        super().__init__()
        c = cfg.channels
        self.trunk = ResNet18Trunk(cfg)
        self.shape = Branch(c)
        self.texture = Branch(c) if texture else None

    def forward(self, x):                           # (B, 3, 224, 224)
        h = self.trunk(x)                           # (B, C, 7, 7)
        s = self.shape(h)                           # (B, C, 1, 1)
        t = self.texture(h) if self.texture is not None else None  # (B, C, 1, 1)
        return s, t


class MotionExtractor(nn.Module):
    """E: dS = |S_a - S_o|; M = C2(cat(C1(dS), S_a)) with C1, C2 conv blocks of C outputs."""

    def __init__(self, cfg: MoExtConfig):
        super().__init__()
        c = cfg.channels
        self.c1 = ConvBlock(c, c, cfg.motion_kernel)
        self.c2 = ConvBlock(2 * c, c, cfg.motion_kernel)

    def forward(self, s_onset, s_apex):             # (N, C, 1, 1) each
        if self.training and s_onset.shape[0] < 2:
            raise ValueError(
                "MotionExtractor in training mode needs at least 2 onset/apex pairs per batch (its BatchNorm "
                f"normalises (N, C, 1, 1) maps over the batch), got {s_onset.shape[0]}; use drop_last=True "
                "or call .eval() for inference"
            )
        ds = torch.abs(s_apex - s_onset)            # (N, C, 1, 1)
        h = torch.cat([self.c1(ds), s_apex], dim=1) # (N, 2C, 1, 1)
        return self.c2(h)                           # (N, C, 1, 1)


def motion_of(extractor: "MotionExtractor | None", s_onset, s_apex):
    """M from the shape features: E(S_o, S_a), or |S_a - S_o| when the network has no motion
    extractor (MoExtConfig.motion_extractor=False, the paper's Table 7 ablation)."""
    if extractor is None:
        return torch.abs(s_apex - s_onset)          # (N, C, 1, 1)
    return extractor(s_onset, s_apex)               # (N, C, 1, 1)


def without_motion_extractor(model: "MoExtClassifier") -> "MoExtClassifier":
    """The same classifier with E removed (|S_a - S_o| straight to the FC): trunk, shape
    branch and FC weights are kept (the FC maps C -> classes either way). What fine-tuning
    uses for the "without motion extractor" ablation when it starts from a pre-training
    checkpoint made with E."""
    if model.motion is None:
        return model
    cfg = MoExtConfig.from_dict({**model.cfg.to_dict(), "motion_extractor": False})
    out = MoExtClassifier(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("motion.")}
    out.load_state_dict(state, strict=True)
    return out.to(next(model.parameters()).device)


def _up_conv(c_in: int, c_out: int, mode: str) -> nn.Sequential:
    """Upsample x2, Conv(c_out, 3x3, pad 1), BN, ReLU (one row of Table 2)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode=mode),
        nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class ApexReconstructor(nn.Module):
    """R: cat(M, T_o) (N, 2C, 1, 1) -> apex estimate (N, 3, 224, 224) (paper, Table 2).

    Channel counts below are at width 1.0 and scale with the width; the final 3 and the
    spatial sizes do not. Table 2's last row says 512 output channels, a typo for 3."""

    def __init__(self, cfg: MoExtConfig, upsample: str = "nearest"):
        super().__init__()
        w = cfg.scaled
        c_in = 2 * cfg.channels
        self.head = nn.Sequential(
            _up_conv(c_in, w(512), upsample),       # (N, 512, 2, 2)
            _up_conv(w(512), w(512), upsample),     # (N, 512, 4, 4)
            _up_conv(w(512), w(512), upsample),     # (N, 512, 8, 8)
            nn.AvgPool2d(kernel_size=2, stride=1),  # (N, 512, 7, 7)
        )
        self.up = nn.Sequential(
            _up_conv(w(512), w(512), upsample),     # (N, 512, 14, 14)
            _up_conv(w(512), w(256), upsample),     # (N, 256, 28, 28)
            _up_conv(w(256), w(128), upsample),     # (N, 128, 56, 56)
            _up_conv(w(128), w(64), upsample),      # (N, 64, 112, 112)
        )
        self.refine = nn.Sequential(
            ConvBlock(w(64), w(32)), *[ConvBlock(w(32), w(32)) for _ in range(4)]
        )                                           # (N, 32, 112, 112)
        self.out = nn.Sequential(
            nn.Upsample(scale_factor=2, mode=upsample),  # (N, 32, 224, 224)
            nn.Conv2d(w(32), 3, 3, 1, 1),           # (N, 3, 224, 224)
            nn.ReLU(),
        )

    def forward(self, m, t_onset):                  # (N, C, 1, 1) each
        x = torch.cat([m, t_onset], dim=1)          # (N, 2C, 1, 1)
        x = self.head(x)                            # (N, 512, 7, 7)
        x = self.up(x)                              # (N, 64, 112, 112)
        x = self.refine(x)                          # (N, 32, 112, 112)
        return self.out(x)                          # (N, 3, 224, 224)


class ProjectionHead(nn.Module):
    """f: (B, C[, 1, 1]) -> (B, proj_dim) on the unit sphere; MLP C -> P -> P (our choice,
    MOEXT.md: the paper gives no size; unit norm makes the margin eps meaningful)."""

    def __init__(self, c: int, proj_dim: int = 1024):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(c, proj_dim), nn.ReLU(inplace=True), nn.Linear(proj_dim, proj_dim))

    def forward(self, x):                           # (B, C, 1, 1) or (B, C)
        z = self.net(x.flatten(1))                  # (B, P)
        return F.normalize(z, dim=1)                # (B, P), ||z|| = 1


# ---------------------------------------------------------------------------------------
# the two networks


class MoExtPretrainer(nn.Module):
    """The whole pre-training model: F (with texture), E, R and the projection f.

    forward(onset, apex) with normalised (N, 3, 224, 224) frames runs F once on the 2N
    frames and returns a dict:
        S_o, T_o, S_a, T_a, M : (N, C, 1, 1)
        recon                 : (N, 3, 224, 224), the apex estimate in [0, inf) (target: apex in [0, 1])
    The contrastive losses (train/losses.py) project features with ``project``."""

    def __init__(self, cfg: MoExtConfig):
        super().__init__()
        if cfg.input_size != 224:
            raise ValueError(
                f"MoExtPretrainer needs input_size=224 (the reconstructor of Table 2 outputs 224x224), "
                f"got {cfg.input_size}; the recognition network alone (MoExtClassifier) accepts other sizes"
            )
        self.cfg = cfg
        self.separator = FeatureSeparator(cfg, texture=True)
        self.motion = MotionExtractor(cfg) if cfg.motion_extractor else None
        self.reconstructor = ApexReconstructor(cfg)
        self.projection = ProjectionHead(cfg.channels, cfg.proj_dim)

    def forward(self, onset, apex) -> dict[str, torch.Tensor]:  # (N, 3, 224, 224) each
        n = onset.shape[0]
        s, t = self.separator(torch.cat([onset, apex], dim=0))  # (2N, C, 1, 1) each
        s_o, s_a = s[:n], s[n:]                     # (N, C, 1, 1)
        t_o, t_a = t[:n], t[n:]
        m = motion_of(self.motion, s_o, s_a)        # (N, C, 1, 1)
        recon = self.reconstructor(m, t_o)          # (N, 3, 224, 224)
        return {"S_o": s_o, "T_o": t_o, "S_a": s_a, "T_a": t_a, "M": m, "recon": recon}

    def project(self, x):                           # (B, C, 1, 1) or (B, C)
        return self.projection(x)                   # (B, P), unit norm


# Parameter-name prefixes that exist only in the pre-training model.
PRETRAIN_ONLY = ("separator.texture.", "reconstructor.", "projection.")


class MoExtClassifier(nn.Module):
    """The recognition network: trunk + shape branch + motion extractor + dropout + FC.

    forward(onset, apex): normalised float (N, 3, H, W) each -> logits (N, classes). The
    trunk runs ONCE on cat([onset, apex]) (2N frames). This is what engines export
    (wrapped in RecognitionGraph)."""

    def __init__(self, cfg: MoExtConfig):
        super().__init__()
        self.cfg = cfg
        self.separator = FeatureSeparator(cfg, texture=False)
        self.motion = MotionExtractor(cfg) if cfg.motion_extractor else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.channels, cfg.num_classes)

    def motion_features(self, onset, apex):         # (N, 3, H, W) each
        n = onset.shape[0]
        s, _ = self.separator(torch.cat([onset, apex], dim=0))  # (2N, C, 1, 1)
        return motion_of(self.motion, s[:n], s[n:])  # (N, C, 1, 1)

    def forward(self, onset, apex):                 # (N, 3, H, W) each
        m = self.motion_features(onset, apex).flatten(1)  # (N, C)
        return self.fc(self.dropout(m))             # (N, classes)

    def load_pretrained(self, state: "Mapping[str, torch.Tensor] | nn.Module") -> tuple[list[str], list[str]]:
        """Copy trunk, shape branch and motion extractor from a pre-training model or its
        state dict (train.checkpoint.load_checkpoint(...)[0]). The texture branch, the
        reconstructor and the projection head are dropped on purpose.

        Returns (missing, unexpected): classifier keys the state lacks (normally just
        fc.weight, fc.bias, which keep their initialisation) and state keys that belong to
        neither network. Both are logged. Raises ValueError naming the first tensors whose
        shapes differ (a width or class-count mismatch)."""
        if isinstance(state, nn.Module):
            state = state.state_dict()
        own = self.state_dict()
        take, unexpected, dropped = {}, [], 0
        for k, v in state.items():
            key = _strip_prefixes(k, ("module.", "_orig_mod."))
            if key in own:
                take[key] = v
            elif key.startswith(PRETRAIN_ONLY) or (self.motion is None and key.startswith("motion.")):
                dropped += 1  # parts this network does not have (E too in the no-motion-extractor ablation)
            else:
                unexpected.append(k)
        bad = [f"{k}: {tuple(v.shape)} given vs {tuple(own[k].shape)} here"
               for k, v in take.items() if tuple(v.shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(
                f"pre-trained weights do not fit this classifier (width {self.cfg.width}, "
                f"{self.cfg.num_classes} classes): {len(bad)} shape mismatches, e.g. {bad[:3]}; "
                "build the classifier with the checkpoint's width"
            )
        missing = sorted(set(own) - set(take))
        self.load_state_dict(take, strict=False)
        level = logging.WARNING if unexpected or set(missing) - {"fc.weight", "fc.bias"} else logging.INFO
        log.log(level, "load_pretrained: %d tensors loaded, %d pre-training-only dropped; missing %s; unexpected %s",
                len(take), dropped, missing, unexpected)
        return missing, unexpected


class RecognitionGraph(nn.Module):
    """What engines export: float32 (N, 3, H, W) RGB in 0..255 onset/apex -> softmax
    probabilities (N, classes). Normalisation (x / 255 - mean) / std happens inside, as
    one affine op with constants folded from the config; no data-dependent control flow
    and no in-place ops on the inputs, so it traces and exports to ONNX as is."""

    def __init__(self, classifier: MoExtClassifier):
        super().__init__()
        self.classifier = classifier
        cfg = classifier.cfg
        mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std == x * scale + shift
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)

    @property
    def cfg(self) -> MoExtConfig:
        return self.classifier.cfg

    def forward(self, onset, apex):                 # (N, 3, H, W) each, 0..255
        o = onset * self.scale + self.shift         # (N, 3, H, W) normalised
        a = apex * self.scale + self.shift
        logits = self.classifier(o, a)              # (N, classes)
        return torch.softmax(logits, dim=1)         # (N, classes), rows sum to 1


# ---------------------------------------------------------------------------------------
# sizes


def count_params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def param_breakdown(cfg: MoExtConfig) -> dict[str, int]:
    """Parameter counts of every part (what scripts/model_info.py prints)."""
    with torch.device("meta"):  # shapes only, no memory
        clf = MoExtClassifier(cfg)
        pre = MoExtPretrainer(cfg) if cfg.input_size == 224 else None
    return {
        "recognition": count_params(clf),
        "trunk": count_params(clf.separator.trunk),
        "shape_branch": count_params(clf.separator.shape),
        "motion_extractor": count_params(clf.motion),  # 0 without the motion extractor (ablation)
        "classifier_fc": count_params(clf.fc),
        "texture_branch": count_params(pre.separator.texture) if pre is not None else 0,
        "reconstructor": count_params(pre.reconstructor) if pre is not None else 0,
        "projection": count_params(pre.projection) if pre is not None else 0,
        "pretrainer": count_params(pre),
    }
