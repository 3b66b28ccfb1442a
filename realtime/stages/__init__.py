"""The live path's stages, in a frame's order: sources -> tracker -> motion -> spotter ->
worker (recognition) -> overlay -> sinks; ``pipeline`` runs them per frame (with the
face-region ``framebuffer`` and the ``eventbook`` of events between spotter and sinks),
``results`` holds what it hands out, and ``recording`` drives one recording through a
pipeline."""
