"""The live path's stages, in a frame's order: sources -> tracker (``multitrack`` for every
face) -> motion -> spotter -> worker (recognition) -> overlay -> sinks; ``pipeline`` runs
them per frame (one ``lane`` per face, with its face-region ``framebuffer``; the
``eventbook`` of events between spotter and sinks),
``results`` holds what it hands out, and ``recording`` drives one recording through a
pipeline."""
