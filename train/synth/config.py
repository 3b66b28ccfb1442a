"""The generator's settings: every range it randomises and every limit it keeps.

Owns the reference face size the amplitudes are quoted at (REF_FACE_WIDTH), the
micro-expression timing limits (MICRO_MAX_S, MICRO_RISE_S) and the standard clips' neutral
lead-in and gaps, ``SynthConfig`` (the standard clips' and pairs' events and camera), the
two cameras of the harder sets (``webcam_camera``, ``high_speed_camera``) and
``HardConfig`` (the hard set's and the dataset-style sequences' ranges), with the hard
set's fixed names (HARD_SECONDS, HARD_FPS, SETS, HARD_TYPES, SEQ_SECONDS, SEQ_ONSET_S).
No other module of train.synth defines a range or a limit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

REF_FACE_WIDTH = 160.0
"""Jaw width (dlib points 0 -> 16) of a typical webcam face at 640x480, in pixels (the
bundled sample video's face measures 156 px). Amplitudes are quoted at this face size."""


MICRO_MAX_S = 0.5         # an ME lasts under 500 ms in total (REALTIME.md)
MICRO_RISE_S = (0.04, 0.25)  # onset -> apex of an ME (REALTIME.md allows <= 260 ms)
LEAD_IN_S = 1.0           # neutral start: the live spotter calibrates on it
MIN_GAP_S = 1.0           # neutral time between two events
KINDS = ("micro", "macro", "blink")


@dataclass
class SynthConfig:
    """Ranges of everything the generator randomises (uniform unless said otherwise).

    Amplitudes are the apex displacement of the strongest point, in pixels at a face of
    REF_FACE_WIDTH (jaw width 160 px, a 640x480 webcam face), scaled with the real face."""

    micro_amplitude: tuple[float, float] = (1.5, 4.0)
    macro_amplitude: tuple[float, float] = (4.0, 8.0)
    blink_closure: tuple[float, float] = (0.8, 1.0)       # fraction of the eye opening
    micro_rise_s: tuple[float, float] = MICRO_RISE_S
    micro_total_s: tuple[float, float] = (0.15, 0.48)
    macro_rise_s: tuple[float, float] = (0.25, 0.7)
    macro_hold_s: tuple[float, float] = (0.0, 0.5)
    macro_fall_s: tuple[float, float] = (0.3, 1.0)
    blink_close_s: tuple[float, float] = (0.04, 0.1)
    blink_open_s: tuple[float, float] = (0.06, 0.2)
    mix: tuple[float, float, float] = (0.6, 0.2, 0.2)      # micro, macro, blink weights ("mixed")
    gap_extra_s: tuple[float, float] = (0.0, 0.8)          # neutral time beyond MIN_GAP_S
    # face placement in the frame (jaw width at 640x480, scaled with the frame)
    face_width: tuple[float, float] = (130.0, 190.0)
    pose_deg: float = 4.0
    offset_frac: tuple[float, float] = (0.06, 0.05)
    # camera nuisance
    drift_px: float = 2.0           # head translation amplitude per axis, px
    drift_deg: float = 0.5          # head roll amplitude
    drift_scale: float = 0.006      # head distance (zoom) amplitude
    drift_period_s: tuple[float, float] = (4.0, 12.0)
    clip_gain: tuple[float, float] = (0.9, 1.1)   # exposure of a clip
    light_drift: float = 0.02       # slow gain change amplitude
    flicker: float = 0.005          # fast gain flicker amplitude
    flicker_hz: tuple[float, float] = (3.0, 12.0)
    colour_cast: float = 0.05
    noise_sigma: tuple[float, float] = (1.0, 2.5)
    jpeg_fraction: float = 0.1      # share of frames re-encoded as JPEG (clips)
    jpeg_quality: tuple[int, int] = (70, 95)
    # pairs: pose, light and motion between onset and apex
    pair_face_width: tuple[float, float] = (130.0, 200.0)
    pair_pose_deg: float = 8.0
    pair_mirror_p: float = 0.5
    pair_gain: tuple[float, float] = (0.8, 1.2)
    pair_bias: float = 15.0
    pair_shading: float = 0.15
    pair_flicker: float = 0.01      # onset -> apex gain change
    pair_drift_px: float = 0.3      # std of onset -> apex head translation, px
    pair_drift_deg: float = 0.15
    pair_jpeg_p: float = 0.5
    # the paper's macro pseudo-apex: the 5th frame counting the onset as the 1st (onset + 4
    # frames, train.datasets.PSEUDO_APEX_STEP), at CAS(ME)^3's 30 fps
    macro_pseudo_apex_frames: int = 4
    macro_pseudo_apex_fps: float = 30.0

    @property
    def macro_pseudo_apex_s(self) -> float:
        """Seconds from the onset to the macro pseudo-apex (4 / 30 s)."""
        return self.macro_pseudo_apex_frames / self.macro_pseudo_apex_fps

    @classmethod
    def clean(cls, **overrides) -> "SynthConfig":
        """No camera nuisance (no drift, noise, flicker, JPEG): for figures and tests."""
        base = dict(clip_gain=(1.0, 1.0), drift_px=0.0, drift_deg=0.0, drift_scale=0.0, light_drift=0.0, flicker=0.0,
                    colour_cast=0.0, noise_sigma=(0.0, 0.0), jpeg_fraction=0.0, pose_deg=0.0,
                    pair_pose_deg=0.0, pair_mirror_p=0.0, pair_gain=(1.0, 1.0), pair_bias=0.0,
                    pair_shading=0.0, pair_flicker=0.0, pair_drift_px=0.0, pair_drift_deg=0.0, pair_jpeg_p=0.0)
        base.update(overrides)
        return cls(**base)


HARD_SECONDS = 20.0
HARD_FPS = (30.0, 60.0, 100.0, 200.0)         # the frame rates the hard set is made and tested at
SETS = ("standard", "hard")
HARD_TYPES = ("hard", "talking", "lighting")  # talking / lighting: distractor-only clips (no ME)
SEQ_SECONDS = (0.3, 2.0)
SEQ_ONSET_S = 0.3                             # a sequence's ME starts within its first 300 ms


def webcam_camera(**overrides) -> SynthConfig:
    """A webcam: head drift and roll, sensor noise with demosaicing blur, JPEG on every
    frame (webcams send MJPEG), mains flicker and a slow exposure drift."""
    base = dict(drift_px=3.0, drift_deg=0.8, drift_scale=0.01, drift_period_s=(3.0, 10.0), light_drift=0.03,
                flicker=0.008, flicker_hz=(2.0, 14.0), colour_cast=0.08, noise_sigma=(2.0, 3.5),
                jpeg_fraction=1.0, jpeg_quality=(70, 90), pose_deg=6.0)
    base.update(overrides)
    return SynthConfig(**base)


def high_speed_camera(**overrides) -> SynthConfig:
    """A lab high-speed camera (CASME II style): a large face, a still subject, steady
    light, low noise, no compression beyond the saved JPEG."""
    base = dict(face_width=(210.0, 280.0), pose_deg=3.0, offset_frac=(0.03, 0.03), drift_px=0.3, drift_deg=0.05,
                drift_scale=0.001, clip_gain=(0.95, 1.05), light_drift=0.003, flicker=0.002, colour_cast=0.03,
                noise_sigma=(0.4, 1.0), jpeg_fraction=0.0)
    base.update(overrides)
    return SynthConfig(**base)


@dataclass
class HardConfig:
    """Ranges of the hard set and of the dataset-style sequences (uniform unless said).

    Spatial amplitudes are px at REF_FACE_WIDTH (a 160 px jaw width), like SynthConfig's;
    the ground truth reports them in 224-crop pixels. ME amplitudes are drawn
    LOG-uniformly and scaled per class (``micro_gain``: the regions the motion signal
    averages over dilute AU12's small mouth-corner field more than AU4's / AU1+2's brow
    fields), so that the ME peak of the motion signal spans about 5x to 50x a clip's calm
    level (measured: see tests and the module docstring)."""

    camera: SynthConfig = field(default_factory=webcam_camera)
    noise_blur: float = 0.7                 # px: sensor noise blurred like a demosaiced webcam's
    micro_amplitude: tuple[float, float] = (1.6, 16.0)      # log-uniform
    micro_gain: dict = field(default_factory=lambda: {"positive": 1.0, "negative": 1.0, "surprise": 0.8})
    macro_amplitude: tuple[float, float] = (8.0, 18.0)
    yawn_amplitude: tuple[float, float] = (18.0, 32.0)
    long_hold_s: tuple[float, float] = (1.0, 2.0)           # macro-expressions held >= 1 s
    start_p: tuple[float, float, float] = (0.45, 0.35, 0.2)  # clip starts talking / in a macro / turning
    speech_seconds: tuple[float, float] = (1.2, 3.5)
    speech_open: tuple[float, float] = (4.0, 9.0)           # jaw drop of a full syllable
    syllable_rate: tuple[float, float] = (3.0, 6.0)         # per second
    word_pause_s: tuple[float, float] = (0.08, 0.3)
    word_pause_p: float = 0.2
    me_in_pause_p: float = 0.75             # a speech segment is followed by an ME in the pause
    me_pause_s: tuple[float, float] = (0.45, 0.9)           # speech -> ME and ME -> speech
    gap_s: tuple[float, float] = (0.45, 1.2)                 # between other expression-track items
    me_clear_s: float = 0.45                # no distractor starts or ends this close to an ME
    talk_pause_s: tuple[float, float] = (0.3, 1.2)           # talking-only clips
    head_seconds: tuple[float, float] = (0.3, 1.5)
    head_amplitude: tuple[float, float] = (2.0, 6.0)
    gaze_seconds: tuple[float, float] = (0.4, 2.5)
    gaze_shift: tuple[float, float] = (0.12, 0.3)           # fraction of the eye width
    wink_closure: tuple[float, float] = (0.85, 1.0)         # fraction of the eye opening
    blink_per_min: tuple[float, float] = (10.0, 25.0)
    light_p: float = 0.5                    # a clip has a lighting sweep (clips: every other one)
    light_seconds: tuple[float, float] = (0.5, 2.0)
    light_change: tuple[float, float] = (0.1, 0.3)          # relative brightness change
    breathing_px: tuple[float, float] = (0.2, 0.6)
    jitter_px: float = 0.12                 # std of the small, fast head jitter
    # dataset-style sequences
    sequence_camera: SynthConfig = field(default_factory=high_speed_camera)
    sequence_amplitude: tuple[float, float] = (0.5, 5.0)    # log-uniform
    sequence_breathing_px: tuple[float, float] = (0.0, 0.1)
    sequence_jitter_px: float = 0.02
