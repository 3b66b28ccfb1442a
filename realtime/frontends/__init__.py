"""The front ends over one pipeline: the command line (``cli``, with its options in
``options``, behind run_live.py), the README's overlay screenshot (``snapshot``) and the
Gradio browser demo (``webapp`` lays out the page, ``webhandlers`` answers it, one
``websession`` per browser session, ``webcodec`` encodes its videos).

Importing this package turns Gradio's usage reports off (GRADIO_ANALYTICS_ENABLED=False),
before any of its modules imports gradio."""
import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by gradio when it is imported
