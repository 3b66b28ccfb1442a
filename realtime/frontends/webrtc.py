"""The web demo's second live transport: WebRTC (aiortc), beside Gradio's image stream.

Gradio's streaming sends each webcam frame as an image over its queue and gets a JPEG back;
it tops out near 20 frames/s here (README, "Web demo"). This transport sends the webcam as
a real-time video track (VP8/H.264, the browser's encoder) and gets the annotated frames
back as a video track on the same peer connection, with the events on a data channel.
It lives in the same server and process as the Gradio page (routes added to the app Gradio
launched, ``mount``), and each connection is a ``WebSession`` of the same ``WebApp``: the
same per-session pipeline (``LiveStream.process``), limits (``max_live``), idle reaping
and shared recogniser as the Gradio live tab.

    GET  /webrtc          the page: webcam preview, annotated video, stats, events table
    POST /webrtc/offer    {"sdp", "type"} -> the server's answer {"sdp", "type", "id"}

Both need Gradio's login when the demo runs with ``--auth`` (the cookie its login form sets).

Frames: aiortc decodes each received frame; ``MediaRelay.subscribe(buffered=False)`` hands
over only the newest one (a frame that arrives while the previous one is processed is
skipped, the newest-frame policy of the other sources), which runs through the session's
pipeline in a worker thread (the asyncio loop keeps serving RTP meanwhile); the annotated
frame goes back with the source frame's timestamp. The pipeline's time is the sender's
capture clock (the frames' RTP timestamps), not their arrival times. No STUN/TURN server is
configured: the browser must reach the server directly (same machine or LAN; behind NAT use
Gradio's stream, or put a TURN server in ``ICE_SERVERS``). Needs the ``webrtc`` extra
(``pip install -e ".[webrtc]"``: aiortc); without it the page says so.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Request  # Gradio's server (a module-level name: FastAPI reads the annotation)
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

log = logging.getLogger("realtime.frontends.webrtc")

OFFER_TIMEOUT_S = 20.0
WEBCAM_FPS = 30.0  # the stream's nominal rate (time windows follow the sender's timestamps anyway)
ICE_SERVERS: list[dict] = []  # e.g. [{"urls": "turn:host:3478", "username": ..., "credential": ...}]
INSTALL_HINT = 'WebRTC needs aiortc: pip install -e ".[webrtc]"'


def aiortc_available() -> bool:
    try:
        import aiortc  # noqa: F401
    except ImportError:
        return False
    return True


class RtcPeers:
    """The WebRTC connections of one ``WebApp``: an asyncio loop in its own thread (aiortc
    needs one; Gradio's server runs another), one ``WebSession`` per connection."""

    def __init__(self, app: Any) -> None:
        if not aiortc_available():
            raise RuntimeError(INSTALL_HINT)
        from aiortc.contrib.media import MediaRelay

        self.app = app
        self.relay = MediaRelay()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="webrtc", daemon=True)
        self.thread.start()
        self.pool = ThreadPoolExecutor(max_workers=max(1, app.config.max_live), thread_name_prefix="webrtc-frame")
        self.peers: dict[str, tuple[Any, Any]] = {}  # id -> (RTCPeerConnection, WebSession)
        self.closed = False

    # -- signalling (called from the web server's threads) ---------------------------------
    def answer(self, offer: dict) -> dict:
        """The browser's offer ({"sdp", "type": "offer"}) -> the answer, with the
        connection's id. Raises ValueError for a malformed offer."""
        if self.closed:
            raise RuntimeError("the web demo was shut down")
        if not isinstance(offer, dict) or offer.get("type") != "offer" or not isinstance(offer.get("sdp"), str) \
                or "m=video" not in offer["sdp"]:
            raise ValueError("expected {\"sdp\": ..., \"type\": \"offer\"} with a video track")
        fut = asyncio.run_coroutine_threadsafe(self._answer(offer["sdp"]), self.loop)
        return fut.result(timeout=OFFER_TIMEOUT_S)

    async def _answer(self, sdp: str) -> dict:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(**s) for s in ICE_SERVERS]))
        session = self.app.session(None, None)
        session.live.nominal_fps = WEBCAM_FPS
        pid = session.id
        self.peers[pid] = (pc, session)
        channel: dict[str, Any] = {}

        @pc.on("datachannel")
        def on_datachannel(ch):
            channel["events"] = ch

            @ch.on("message")
            def on_message(msg):
                if msg == "recalibrate":
                    session.live.recalibrate()
                elif msg == "clear":
                    session.live.clear_events()

        @pc.on("track")
        def on_track(track):
            if track.kind == "video":
                pc.addTrack(AnnotatedTrack(self.relay.subscribe(track, buffered=False), session, self, channel))

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in ("failed", "closed"):
                await self._close_peer(pid)

        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except (AssertionError, ValueError) as e:  # aiortc's SDP parser asserts
                raise ValueError(f"the offer's SDP could not be read ({type(e).__name__}: {e}); send the "
                                 "browser's RTCPeerConnection offer unchanged") from None
            await pc.setLocalDescription(await pc.createAnswer())  # ICE candidates gathered here
        except Exception:
            await self._close_peer(pid)  # nothing left behind for a failed negotiation
            raise
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "id": pid}

    async def _close_peer(self, pid: str) -> None:
        pc, session = self.peers.pop(pid, (None, None))
        if pc is not None:
            await pc.close()
            self.app.close_session(session.id)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True

        async def close_all():
            for pid in list(self.peers):
                await self._close_peer(pid)

        try:
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=10)
        except Exception as e:  # shutting down: log, never raise
            log.warning("closing WebRTC connections: %s", e)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.pool.shutdown(wait=False, cancel_futures=True)


@functools.cache
def _annotated_track_class():
    """The track class, made once on first use (aiortc and PyAV are an optional extra)."""
    from aiortc import MediaStreamTrack
    from av import VideoFrame

    class _AnnotatedTrack(MediaStreamTrack):
        """The annotated frames of one connection: the newest received frame through the
        session's pipeline, with the received frame's timestamp."""

        kind = "video"

        def __init__(self, source, session, peers: RtcPeers, channel: dict) -> None:
            super().__init__()
            self.source, self.session, self.peers, self.channel = source, session, peers, channel
            self.rows_version = -1

        async def recv(self):
            frame = await self.source.recv()
            arrival = time.perf_counter()
            bgr = frame.to_ndarray(format="bgr24")
            # the sender's capture clock (RTP timestamps): the pipeline's time windows follow it
            source_t = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
            live = self.session.live
            try:
                out = await asyncio.get_running_loop().run_in_executor(
                    self.peers.pool, functools.partial(live.process, bgr, arrival, source_t=source_t))
            except RuntimeError as e:  # the session was closed under us
                log.info("WebRTC frame not processed: %s", e)
                out = None
            new = VideoFrame.from_ndarray(out if out is not None else bgr, format="bgr24")
            new.pts, new.time_base = frame.pts, frame.time_base
            self._send_events(live)
            return new

        def _send_events(self, live) -> None:
            ch = self.channel.get("events")
            if ch is None or ch.readyState != "open":
                return
            msg = {}
            if live.rows_version != self.rows_version:
                self.rows_version = live.rows_version
                msg["rows"] = live.table().to_dict(orient="records")
            if live.frames % 5 == 1:
                msg["stats"] = live.stats()
            if msg:
                ch.send(json.dumps(_finite(msg), default=str, allow_nan=False))

    return _AnnotatedTrack


def _finite(value):
    """``value`` with NaN / infinite floats (an unlabelled event's confidence, a decision
    time not yet known) as None: the browser's JSON.parse rejects NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def AnnotatedTrack(source, session, peers: RtcPeers, channel: dict):
    """An aiortc video track (made on first use: aiortc is an optional extra)."""
    return _annotated_track_class()(source, session, peers, channel)


# ---------------------------------------------------------------------------------------
# routes on the app Gradio launched


def mount(demo: Any) -> RtcPeers | None:
    """Add the WebRTC page and its signalling route to a launched gr.Blocks (``demo.app``)
    whose ``moext_app`` is the WebApp. Returns the RtcPeers (None without aiortc: the page
    then says what to install). Close it with the WebApp (``WebApp.close`` does)."""
    app = demo.moext_app
    peers = RtcPeers(app) if aiortc_available() else None
    app.rtc = peers

    async def logged_in(request: Request) -> bool:
        """Gradio's own login (``launch(auth=...)``) guards these routes too: the page and
        the offer need the session cookie its login form sets (as gradio.routes' login_check)."""
        server = demo.app
        dependency = getattr(server, "auth_dependency", None)
        if server.auth is None and dependency is None:
            return True
        if dependency is not None:
            user = dependency(request)
            return (await user if inspect.isawaitable(user) else user) is not None
        token = (request.cookies.get(f"access-token-{server.cookie_id}")
                 or request.cookies.get(f"access-token-unsecure-{server.cookie_id}"))
        return server.tokens.get(token) is not None

    async def page(request: Request):
        if not await logged_in(request):
            return RedirectResponse("./", status_code=302)   # Gradio's page asks for the login
        return HTMLResponse(PAGE.replace("__AVAILABLE__", "true" if peers else "false")
                            .replace("__HINT__", INSTALL_HINT)
                            .replace("__WIDTH__", str(app.config.camera_width))
                            .replace("__HEIGHT__", str(app.config.camera_height)))

    async def offer(request: Request) -> JSONResponse:
        if not await logged_in(request):
            return JSONResponse({"error": "not logged in: open the demo's main page and log in first"},
                                status_code=401)
        if peers is None:
            return JSONResponse({"error": INSTALL_HINT}, status_code=501)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"error": "the offer is not JSON"}, status_code=400)
        try:
            answer = await asyncio.to_thread(peers.answer, body)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        except Exception as e:  # a full server, a shut-down demo, a negotiation failure
            log.warning("WebRTC offer refused: %s", e)
            return JSONResponse({"error": f"{type(e).__name__}: {e}"}, status_code=503)
        return JSONResponse(answer)

    demo.app.add_api_route("/webrtc", page, methods=["GET"], include_in_schema=False)
    demo.app.add_api_route("/webrtc/offer", offer, methods=["POST"], include_in_schema=False)
    return peers


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MoExt live (WebRTC)</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 16px; }
 video { background: #222; border-radius: 6px; }
 table { border-collapse: collapse; margin-top: 8px; font-size: 14px; }
 td, th { border: 1px solid #ccc; padding: 2px 6px; }
 #stats { font-family: monospace; white-space: pre-wrap; }
</style></head>
<body>
<h2>Micro-expression recognition: live over WebRTC</h2>
<p>The same pipeline as the <a href="./">main page</a>'s Live tab, streamed as video both ways.
The first second calibrates on a neutral face. Webcam frames are processed in memory and not stored.
The default weights are demonstration weights trained only on synthetic micro-expressions.</p>
<p><button id="start">Start webcam</button> <button id="stop" disabled>Stop</button>
<button id="recal" disabled>Recalibrate (keep a neutral face)</button> <button id="clear" disabled>Clear events</button></p>
<p id="error" style="color:#b00"></p>
<div style="display:flex; gap:12px; align-items:flex-start">
 <div><div>Webcam</div><video id="local" autoplay muted playsinline width="320"></video></div>
 <div><div>Annotated</div><video id="annotated" autoplay muted playsinline width="640"></video></div>
</div>
<div id="stats"></div>
<table id="events"><thead></thead><tbody></tbody></table>
<script>
const AVAILABLE = __AVAILABLE__;
let pc = null, dc = null, stream = null;
const $ = (id) => document.getElementById(id);
const fail = (msg) => { $('error').textContent = msg; };
if (!AVAILABLE) fail('This server cannot do WebRTC: __HINT__');
function render(msg) {
  if (msg.stats) {
    const s = msg.stats;
    $('stats').textContent = s.fps.toFixed(1) + ' fps processed, frames ' + s.frames + ' (face in ' +
      s.frames_with_face + '), events ' + s.events + (s.calibrating ? ', calibrating' : '') +
      ', server time per frame p50 ' + s.server_ms_p50 + ' ms';
  }
  if (msg.rows) {
    const cols = ['face', 'apex_t', 'kind', 'label', 'confidence', 'onset_frame', 'apex_frame', 'offset_frame',
                  'decision_ms', 'status'];
    $('events').tHead.innerHTML = '<tr>' + cols.map(c => '<th>' + c + '</th>').join('') + '</tr>';
    $('events').tBodies[0].innerHTML = msg.rows.map(r => '<tr>' + cols.map(c =>
      '<td>' + (r[c] === null || r[c] === undefined ? '' : String(r[c]).replace(/</g, '&lt;')) + '</td>').join('') +
      '</tr>').join('');
  }
}
async function start() {
  fail('');
  try {
    stream = await navigator.mediaDevices.getUserMedia(
      {video: {width: {ideal: __WIDTH__}, height: {ideal: __HEIGHT__}}, audio: false});
  } catch (e) { fail('No webcam: ' + e); return; }
  $('local').srcObject = stream;
  pc = new RTCPeerConnection();
  dc = pc.createDataChannel('events');
  dc.onmessage = (m) => render(JSON.parse(m.data));
  pc.ontrack = (e) => {
    // show each frame as soon as it is decoded: no jitter buffer beyond what the network needs
    if ('jitterBufferTarget' in e.receiver) e.receiver.jitterBufferTarget = 0;
    if ('playoutDelayHint' in e.receiver) e.receiver.playoutDelayHint = 0;
    $('annotated').srcObject = e.streams[0] || new MediaStream([e.track]);
  };
  pc.onconnectionstatechange = () => { if (pc && pc.connectionState === 'failed') fail('connection failed'); };
  stream.getTracks().forEach(t => pc.addTrack(t, stream));
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(resolve => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') resolve(); });
    setTimeout(resolve, 3000);
  });
  const r = await fetch('webrtc/offer', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type})});
  const answer = await r.json();
  if (!r.ok) { fail('The server refused the stream: ' + answer.error); stop(); return; }
  await pc.setRemoteDescription(answer);
  $('start').disabled = true; $('stop').disabled = false; $('recal').disabled = false; $('clear').disabled = false;
}
function stop() {
  if (pc) pc.close();
  if (stream) stream.getTracks().forEach(t => t.stop());
  pc = null; dc = null; stream = null;
  $('start').disabled = !AVAILABLE; $('stop').disabled = true; $('recal').disabled = true; $('clear').disabled = true;
}
$('start').disabled = !AVAILABLE;
$('start').onclick = start;
$('stop').onclick = stop;
$('recal').onclick = () => { if (dc && dc.readyState === 'open') dc.send('recalibrate'); };
$('clear').onclick = () => { if (dc && dc.readyState === 'open') dc.send('clear'); };
</script>
</body></html>
"""
