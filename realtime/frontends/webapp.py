"""The browser demo: live webcam recognition and recorded videos, one Pipeline per session.

    python run_live.py --gradio [--port 7860] [--host 0.0.0.0] [--share --auth user:password]
    python -m realtime.frontends.webapp --engine runs/demo/best.safetensors      # same, without run_live.py

Built on the same path as run_live.py (realtime.stages.pipeline, STYLE.md "one pipeline, many
front ends"); nothing here spots, aligns or recognises by itself.

Tabs
- Live: the browser's webcam streams JPEG frames to the server (Gradio 6 ``Image``
  streaming, REALTIME.md "Browser demo facts": stream_every 0.05 s, mirror off, 640x480
  requested); each frame goes through the session's own ``Pipeline``; the annotated frame
  comes back as an in-memory JPEG (a data URL: live frames are never written to disk),
  with a table of events (provisional, then final or withdrawn) and the achieved rate and per-stage
  latency. A pause longer than ``restart_gap_s`` starts a new stream (and calibration).
- Recording: an uploaded video (size and duration limits, optional true-fps override for
  high-speed files) runs through ``sources.open_source`` + ``Pipeline`` + the sinks of
  run_live.py (EventLog, SignalCSV) and ``webcodec.BrowserVideoWriter`` (H.264/VP8: what
  OpenCV writes does not play in browsers); out come the annotated video, a plot of the
  motion signal with the spotted intervals and labels, the events table and the files.
- Info: weights, engine, precision, device, and what the default weights are.
- /webrtc (realtime.frontends.webrtc): the live tab over WebRTC, video both ways, in the
  same server and sessions (the ``webrtc`` extra); linked from the Live tab.

Sessions and files (issue "hostile input")
- Each browser session gets a ``WebSession`` (in a ``gr.State``): its own live pipeline
  (tracker, motion signal, spotter, recognition worker; the loaded recogniser is shared)
  and its own output folder. Sessions never read each other's data. The session is
  closed when the tab closes (``Blocks.unload``), after ``session_idle_s`` without use,
  and by the State's delete callback as a last resort.
- Uploads: Gradio refuses files over ``max_upload_mb`` (``launch(max_file_size=...)``);
  the handler checks size and duration again, accepts only files inside Gradio's upload
  folder (a path typed by a user is refused), moves the upload into the session folder
  and deletes it after processing. Each session keeps only its latest results; Gradio's
  own cached copies are deleted after ``cache_age_s`` (``delete_cache``).
- Analytics are off (GRADIO_ANALYTICS_ENABLED=False). Use ``--auth`` with ``--share``.

The page itself is laid out here (``build_page``, with ``MemoryImage`` for the live
frames and the Info panel text); ``webhandlers.WebApp`` answers it, one
``websession.WebSession`` per browser session.
"""
from __future__ import annotations

import argparse
import base64
import logging
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import ImageData

from engines.recognizer import DEMO_WEIGHTS
from realtime.frontends import webrtc
from realtime.frontends.options import build_parser
from realtime.frontends.webhandlers import VIDEO_TYPES, WebApp
from realtime.frontends.websession import (
    JpegFrame, UploadRefused, WebConfig, delete_session_state, events_table,
)

DEMO_NOTE = ("The default weights (engines/assets/moext_demo.safetensors) are demonstration weights trained "
             "only on synthetic micro-expressions (real face photos animated by train/synth.py). They were never "
             "trained on real micro-expression data: their labels show how the system works, they are not a "
             "measurement of anyone's emotions.")
PRIVACY_NOTE = ("Webcam frames are processed in memory and not stored. Uploaded videos are deleted after "
                "processing; results stay in this browser session's own folder and are removed when the "
                "session ends. Record other people only with their consent.")


def parse_auth(spec: str | None) -> tuple[str, str] | None:
    """"user:password" -> (user, password); the password may contain ':'."""
    if not spec:
        return None
    user, sep, password = spec.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"--auth must be USER:PASSWORD with both parts non-empty, got {spec!r}")
    return user, password


def engine_markdown(info: dict, config: WebConfig, note: str = "") -> str:
    """The Info panel text: what runs, and what the default weights are."""
    lines = ["### Model"]
    if not info.get("engine"):
        lines.append("**No recogniser loaded: spotting only** (events are found but carry no label).")
        if note:
            lines.append(f"\n> {note}")
    else:
        weights = info.get("weights") or ""
        is_demo = bool(weights) and Path(weights).resolve() == DEMO_WEIGHTS.resolve()
        rows = [("weights", Path(weights).name + (" (bundled demo weights)" if is_demo else "")),
                ("checkpoint hash", (info.get("checkpoint_hash") or "")[:16]),
                ("engine", info.get("engine")), ("precision", info.get("precision")),
                ("device", info.get("device")), ("classes", ", ".join(info.get("classes") or [])),
                ("network width", info.get("width")), ("parameters", f"{info.get('params', 0):,}")]
        lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows if v not in (None, "")]
        if is_demo or config.engine == "auto":
            lines.append(f"\n**{DEMO_NOTE}**")
        for f in info.get("fallbacks") or []:
            lines.append(f"\n> engine fallback: {f}")
    lines += ["", "### Pipeline", f"face tracker `{config.tracker}`; live stream requested at "
              f"{config.camera_width}x{config.camera_height}, one frame every {config.stream_every:g} s; "
              f"uploads up to {config.max_upload_mb:g} MB and {config.max_duration_s:g} s.",
              "", "### Privacy", PRIVACY_NOTE,
              "", "Automatic micro-expression recognition reports brief facial movements and a guess at "
              "their category; it cannot tell what a person feels or whether they are lying."]
    return "\n".join(lines)


class MemoryImage(gr.Image):
    """gr.Image whose ``JpegFrame`` values go to the page as data URLs: no file per live frame
    (a plain gr.Image writes every output frame into Gradio's cache folder)."""

    is_template = True  # rendered by Gradio's own Image component

    def postprocess(self, value):
        if isinstance(value, JpegFrame):
            return ImageData(url="data:image/jpeg;base64," + base64.b64encode(value.data).decode("ascii"),
                             mime_type="image/jpeg")
        return super().postprocess(value)


# ---------------------------------------------------------------------------------------
# the page


def build_page(app: WebApp) -> gr.Blocks:
    """The gr.Blocks of the demo around ``app``'s handlers (not launched)."""
    cfg = app.config

    def live(image, state, request: gr.Request):
        return app.live_step(image, state, request)

    def recalibrate(state, request: gr.Request):
        return app.live_recalibrate(state, request)

    def clear(state, request: gr.Request):
        return app.live_clear(state, request)

    def record(upload, fps, state, request: gr.Request, progress=gr.Progress()):
        def report(n, total):
            if total:
                progress(min(1.0, n / total), desc=f"frame {n} of {total}")
            else:
                progress(None, desc=f"frame {n}")
        try:
            return app.analyse_upload(upload, fps, state, request, report)
        except UploadRefused as e:
            raise gr.Error(str(e), title="Video not processed") from None

    def unload(request: gr.Request):
        app.close_session(getattr(request, "session_hash", None))

    with gr.Blocks(title="MoExt live: micro-expression recognition", analytics_enabled=False,
                   delete_cache=(max(60, cfg.cache_age_s // 4), cfg.cache_age_s)) as demo:
        gr.Markdown("# Micro-expression recognition\nFace tracking, onset/apex spotting and recognition of "
                    "(onset, apex) pairs, live from your webcam or on a recorded video.")
        state = gr.State(None, delete_callback=delete_session_state, time_to_live=cfg.session_idle_s)
        with gr.Tab("Live", id="live"):
            with gr.Row():
                cam = gr.Image(
                    label="Webcam", sources=["webcam"], streaming=True, type="numpy", elem_id="webcam",
                    webcam_options=gr.WebcamOptions(mirror=False, constraints={
                        "video": {"width": {"ideal": cfg.camera_width}, "height": {"ideal": cfg.camera_height}},
                        "audio": False}))
                shown = MemoryImage(label="Annotated", show_label=False, type="numpy", interactive=False,
                                    elem_id="annotated", format="jpeg")
            stats = gr.Markdown("Start the webcam: the first second calibrates on a neutral face.",
                                elem_id="live-stats")
            gr.Markdown("The same live view as video both ways, at the webcam's frame rate: "
                        "[open the WebRTC page](webrtc) (same machine or LAN).", elem_id="webrtc-link")
            with gr.Row():
                recal = gr.Button("Recalibrate (keep a neutral face)", size="sm")
                clear_btn = gr.Button("Clear events", size="sm")
            table = gr.Dataframe(value=events_table([]), label="Events (newest first)", interactive=False,
                                 elem_id="live-events", max_height=320)
            cam.stream(live, inputs=[cam, state], outputs=[shown, table, stats, state],
                       stream_every=cfg.stream_every, concurrency_limit=cfg.live_concurrency,
                       concurrency_id="live", show_progress="hidden")
            recal.click(recalibrate, inputs=[state], outputs=[state], show_progress="hidden")
            clear_btn.click(clear, inputs=[state], outputs=[table, state], show_progress="hidden")
        with gr.Tab("Recording", id="recording"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(label=f"Video (up to {cfg.max_upload_mb:g} MB, {cfg.max_duration_s:g} s)",
                                     file_types=list(VIDEO_TYPES), type="filepath", elem_id="upload")
                    fps_box = gr.Number(label="True frame rate (fps); 0 = from the file. High-speed cameras: "
                                              "give their rate (e.g. 200)", value=0, minimum=0, maximum=10_000,
                                        precision=None, elem_id="fps")
                    run_btn = gr.Button("Analyse", variant="primary", elem_id="analyse")
                    summary = gr.Markdown(elem_id="rec-summary")
                    files = gr.File(label="Events (JSON lines) and motion signal (CSV)", file_count="multiple",
                                    interactive=False, elem_id="rec-files")
                with gr.Column(scale=2):
                    video = gr.Video(label="Annotated video", interactive=False, elem_id="rec-video",
                                     autoplay=False, loop=False)
            plot = gr.Plot(label="Motion signal and spotted events", elem_id="rec-plot")
            rec_table = gr.Dataframe(value=events_table([]), label="Events", interactive=False,
                                     elem_id="rec-events", max_height=320)
            run_btn.click(record, inputs=[upload, fps_box, state],
                          outputs=[video, plot, rec_table, files, summary, upload, state],
                          concurrency_limit=cfg.recording_concurrency, concurrency_id="recording")
        with gr.Tab("Info", id="info"):
            gr.Markdown(engine_markdown(app.engine_info(), cfg, app.note), elem_id="info")
        demo.unload(unload)
    demo.queue(max_size=max(16, 4 * cfg.max_live))
    demo.moext_app = app  # the handlers and sessions behind this page (tests, launch)
    return demo


# ---------------------------------------------------------------------------------------
# entry points


def build_app(config: WebConfig | None = None, recognizer: Any = None) -> gr.Blocks:
    """The demo's gr.Blocks (not launched). ``recognizer``: an already loaded
    engines.recognizer.Recognizer to share (else ``config.engine`` is loaded; "none" or
    missing demo weights: spotting only). ``demo.moext_app`` is the WebApp behind it."""
    config = config or WebConfig()
    if recognizer is not None:
        app = WebApp(config, recognizer)
    else:
        app = WebApp.load(config)
    return build_page(app)


def launch(args: argparse.Namespace) -> int:
    """Start the demo for run_live.py's parsed arguments (--host --port --share --auth,
    --engine --device --tracker --calibration); blocks until Ctrl+C. Returns the exit status."""
    config = WebConfig.from_args(args)
    try:
        auth = parse_auth(getattr(args, "auth", None))
    except ValueError as e:
        print(f"error: {e}", flush=True)
        return 2
    try:
        app = WebApp.load(config)
    except Exception as e:
        print(f"error: --engine {config.engine}: {e}", flush=True)
        return 2
    demo = build_page(app)
    share = bool(getattr(args, "share", False))
    if share and auth is None:
        print("warning: --share makes the demo reachable by anyone with the link; add --auth USER:PASSWORD",
              flush=True)
    try:
        _, local_url, share_url = demo.launch(
            server_name=getattr(args, "host", "127.0.0.1"), server_port=getattr(args, "port", 7860), share=share,
            auth=auth, max_file_size=f"{int(config.max_upload_mb)}mb", prevent_thread_lock=True, quiet=True,
            show_error=True, ssr_mode=False)
    except OSError as e:
        app.close()
        print(f"error: could not start the web server on {getattr(args, 'host', '')}:{getattr(args, 'port', '')} "
              f"({e}); choose another --port", flush=True)
        return 2
    webrtc.mount(demo)
    print(f"web demo running at {local_url}" + (f" and {share_url}" if share_url else ""), flush=True)
    print(f"live over WebRTC at {local_url}webrtc" if app.rtc else f"no WebRTC page ({webrtc.INSTALL_HINT})",
          flush=True)
    if share and not share_url:
        print("warning: no share link could be created (it needs internet access to gradio.live)", flush=True)
    print("press Ctrl+C to stop", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
        app.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    return launch(args)


if __name__ == "__main__":
    raise SystemExit(main())
