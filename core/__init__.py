"""Facts that training, the engines and the live path share, kept once below all three.

- ``core.face``: face detection, 68 landmarks and the similarity alignment to 224x224 crops.
- ``core.contract``: the recogniser's input contract (aligned uint8 RGB onset/apex crops).
- ``core.protocols``: the class list of every protocol and the label maps onto them.
- ``core.events``: the event record (JSON Lines) and the micro/macro rules.
- ``core.stats`` and ``core.machine``: percentiles and the machine description reports print.
- ``core.assets``: bundled media and face-model files.
- ``core.files``: the sha256 that names a checkpoint (and its cached engines).

Nothing here imports ``train``, ``engines`` or ``realtime``.
"""
