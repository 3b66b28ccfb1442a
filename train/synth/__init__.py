"""Synthetic micro-expressions from real faces: labelled clips and aligned training pairs.

No labelled micro-expression (ME) data can ship with the project (DATASETS.md: every ME
dataset is licence-gated), yet the live path, the benchmark and the demo need real faces
with known onset / apex / offset. This package animates REAL face photos:

- identities: the bundled real faces (core/assets, see ATTRIBUTION.md there) and
  public-domain portraits shipped by scikit-image and matplotlib (assets/faces/LICENSES.md),
  with a fixed train / eval split by PERSON (``train_identities``, ``eval_identities``);
- action units (AUs): smooth displacement fields anchored on dlib's 68 landmarks (a sum
  of Gaussian-weighted displacements around anchors, applied with cv2.remap), e.g. AU12
  lip corners up and out for "positive", AU4 brows down and together for "negative",
  AU1+2 brows up for "surprise" (REALTIME.md, "Test media");
- timing: raised-cosine onset -> apex -> offset profiles; an ME rises in 40-250 ms and
  lasts under 500 ms (Yan et al. 2013, REALTIME.md); macro-expressions (> 500 ms) and blinks
  are distractors with their own ``kind`` in the ground truth;
- a camera: slow head drift and rotation, sensor noise, lighting flicker, JPEG artefacts,
  at any frame rate (default 200 fps) by animating a still, never by resampling video.

Three evaluation sets:

- standard (``clips``, the default): 1 s neutral lead-in, MEs of 1.5-4 px, macro-expressions
  and blinks as distractors, events >= 1 s apart. A spotter scores F1 1.0 on it, which
  says little about real video.
- hard (``clips --set hard``, 20 s clips, ``schedule_hard`` / ``make_hard_clip``): what
  real footage does. No neutral lead-in (most clips talk or hold a macro-expression from
  frame 0, the rest turn the head there); talking segments (syllables at 3-6/s: jaw
  drop AU25/26 that parts the lips, vowel lip shapes AU10/18/20, irregular sizes, word
  pauses, brow raises on stress) with an ME in most pauses (0.45-0.9 s after the last
  syllable; no other movement starts or ends within 0.45 s of an ME: the live spotter
  cannot tell an ME that close to speech from one more syllable); macro-expressions, at least
  one held >= 1 s (broad smile AU6+12, frown AU4, surprise AU1+2+5+26, yawn AU27);
  nods and turns (2-D warps of the head: translation + scale / shear), gaze shifts
  (the eyes' content slides sideways), winks (AU46), blinks, and in every other clip a
  lighting sweep (a band or an edge of light crossing the face, 10-30 %); a webcam
  (drift and roll, breathing, jitter, demosaiced noise, JPEG on every frame, flicker).
  ME amplitudes are log-uniform so that the ME peak of the project's own motion signal
  (realtime.stages.motion.MotionSignal on the aligned crop, max of brows / nose / mouth) spans
  about 5x to 50x the clip's calm level (its median on frames outside every event; 0.08-
  0.18 px here). Measured through realtime.stages.pipeline (tracker, smoothed alignment,
  MotionSignal with the reference never held) on 10 clips at 30, 60, 100 and 200 fps: 52
  MEs, ratios 4.2x-64x, median 13x, 90 % within 5x-50x (HardConfig.micro_amplitude,
  micro_gain). MEs are kept clear of every other event. Ground-truth kinds: micro, macro, blink, wink, gaze,
  speech, head, light; ``amplitude`` in 224-crop px (light: relative brightness).
  ``--distractor-only K``: the last K clips are talking-only (speech + blinks) and
  lighting-only in turn, with no expression.
- sequences (``sequences``): CASME II-style folders of JPEG frames, 0.3-2 s at 200 fps,
  each with ONE ME whose onset is within the first 300 ms (about a third at 30-100 ms),
  seen by a clean high-speed camera (calm level 0.04-0.07 px), amplitudes log-uniform
  from small to clear (measured on 12: ME peaks 0.24-1.7 px, 5x-33x calm).

Several faces in one frame (``clip --faces 2|3``, ``clips --faces 2|3``; ``multiface``): two
or three standard clips of different identities, each with its own seeds and events (at
least a macro-expression, a blink and two MEs per face), side by side in one frame (one
640x480 panel per face, cross-faded seams, one camera over the whole frame); every
ground-truth line carries ``face_box`` [x, y, w, h] of its face at the apex.

Micro or macro is always core.events.expression_kind's "megc" rule (micro iff onset
-> offset <= 500 ms); every generated ground truth obeys it.

Training pairs are aligned exactly as real data is (DATASETS.md, "Alignment"): the
similarity transform of core.face is computed on the onset frame and applied
unchanged to the apex, and written in the crop-cache format of train.cache.

The package, one module per responsibility: ``config`` (every range and limit),
``identities`` (the face stills and their landmarks), ``rig`` (action units as
displacement fields), ``timing`` (the standard clips' events and schedule), ``camera``
(placement, head motion, light, noise, JPEG), ``clips`` (the standard clip generator),
``tracks`` / ``track_render`` / ``hard`` (the hard set's events, their renderer and
schedule), ``multiface`` (several faces side by side, ground truth per face), ``sequences`` (dataset-style sequences), ``pairs`` (aligned training pairs, the
crop cache), ``strip`` (the figure), ``output`` (the one video + ground-truth write path,
CSV tables) and ``cli`` (the command line). This ``__init__`` only re-exports their public
API, so ``from train.synth import write_clip`` and ``synth.make_clip`` keep working.

    python -m train.synth --help
"""
from __future__ import annotations

from train.synth.camera import head_motion, head_region, placement
from train.synth.cli import main
from train.synth.clips import ClipPose, clip_pose, make_clip, write_clip
from train.synth.config import (
    HARD_FPS,
    HARD_SECONDS,
    HARD_TYPES,
    KINDS,
    LEAD_IN_S,
    MICRO_MAX_S,
    MICRO_RISE_S,
    MIN_GAP_S,
    REF_FACE_WIDTH,
    SEQ_ONSET_S,
    SEQ_SECONDS,
    SETS,
    HardConfig,
    SynthConfig,
    high_speed_camera,
    webcam_camera,
)
from train.synth.hard import make_hard_clip, schedule_hard, write_hard_clip
from train.synth.identities import (
    GROUP_FACES,
    IDENTITIES,
    FaceStill,
    Identity,
    detect_landmarks,
    eval_identities,
    extend_canvas,
    identities_for,
    load_still,
    train_identities,
)
from train.synth.multiface import (
    FACE_COUNTS,
    default_size,
    face_box_xywh,
    make_multi_clip,
    pick_identities,
    schedule_face,
    write_multi_clip,
)
from train.synth.output import CODECS, ground_truth_path, write_csv, write_rendered
from train.synth.pairs import (
    CACHE_COLUMNS,
    CACHE_DATASET,
    SynthPair,
    cache_meta,
    make_pairs,
    render_pair,
)
from train.synth.rig import (
    AU_ANCHORS,
    CLASS_AUS,
    JAW_AUS,
    Anchor,
    FaceRig,
    au_string,
    face_axes,
    face_field,
    face_rig,
    gaussian_displacement,
    jaw_field,
    sample_aus,
    sample_sides,
)
from train.synth.sequences import make_sequence, write_sequences
from train.synth.strip import dense_flow, make_strip
from train.synth.timing import (
    MODES,
    EventPlan,
    EventSpec,
    raised_cosine_envelope,
    sample_event,
    schedule_events,
)
from train.synth.track_render import MOUTH_DARK
from train.synth.tracks import (
    MACRO_STYLES,
    SPEECH_FIELDS,
    FaceScale,
    Track,
    eye_track,
    face_scale,
    gaze_track,
    head_track,
    light_track,
    macro_track,
    micro_track,
    speech_track,
)

__all__ = [
    "AU_ANCHORS",
    "CACHE_COLUMNS",
    "CACHE_DATASET",
    "CLASS_AUS",
    "CODECS",
    "FACE_COUNTS",
    "GROUP_FACES",
    "HARD_FPS",
    "HARD_SECONDS",
    "HARD_TYPES",
    "IDENTITIES",
    "JAW_AUS",
    "KINDS",
    "LEAD_IN_S",
    "MACRO_STYLES",
    "MICRO_MAX_S",
    "MICRO_RISE_S",
    "MIN_GAP_S",
    "MODES",
    "MOUTH_DARK",
    "REF_FACE_WIDTH",
    "SEQ_ONSET_S",
    "SEQ_SECONDS",
    "SETS",
    "SPEECH_FIELDS",
    "Anchor",
    "ClipPose",
    "EventPlan",
    "EventSpec",
    "FaceRig",
    "FaceScale",
    "FaceStill",
    "HardConfig",
    "Identity",
    "SynthConfig",
    "SynthPair",
    "Track",
    "au_string",
    "cache_meta",
    "clip_pose",
    "default_size",
    "dense_flow",
    "detect_landmarks",
    "eval_identities",
    "extend_canvas",
    "eye_track",
    "face_axes",
    "face_box_xywh",
    "face_field",
    "face_rig",
    "face_scale",
    "gaussian_displacement",
    "gaze_track",
    "ground_truth_path",
    "head_motion",
    "head_region",
    "head_track",
    "high_speed_camera",
    "identities_for",
    "jaw_field",
    "light_track",
    "load_still",
    "macro_track",
    "main",
    "make_clip",
    "make_hard_clip",
    "make_multi_clip",
    "make_pairs",
    "make_sequence",
    "make_strip",
    "micro_track",
    "pick_identities",
    "placement",
    "raised_cosine_envelope",
    "render_pair",
    "sample_aus",
    "sample_event",
    "sample_sides",
    "schedule_events",
    "schedule_face",
    "schedule_hard",
    "speech_track",
    "train_identities",
    "webcam_camera",
    "write_clip",
    "write_csv",
    "write_hard_clip",
    "write_multi_clip",
    "write_rendered",
    "write_sequences",
]
