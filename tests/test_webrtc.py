"""The web demo's WebRTC transport (realtime/frontends/webrtc.py) with a real aiortc peer in
this process as the browser: frames of the bundled real face with a synthetic
micro-expression go out as a video track (VP8, paced at 30 frames/s), the annotated frames
come back as a video track, the stats and events over the data channel (as JSON a browser
parses); the pipeline runs on the sender's clock; the page's "clear" message empties the
table; closing the connection closes the session. The page itself in real Chromium: tests/test_browser.py."""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

pytest.importorskip("aiortc", reason='the webrtc extra: pip install -e ".[webrtc]"')

from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402
from av import VideoFrame  # noqa: E402

from realtime.frontends.webhandlers import WebApp  # noqa: E402
from realtime.frontends.webrtc import RtcPeers  # noqa: E402
from realtime.frontends.websession import WebConfig  # noqa: E402
from y4m import event_clip_frames  # noqa: E402


@pytest.fixture
def app(tmp_path):
    a = WebApp(WebConfig(engine="none", work_dir=str(tmp_path / "web")))  # spotting only: the transport is tested
    yield a
    a.close()


def clip_frames() -> list[np.ndarray]:
    """4 s at 30 frames/s of the bundled real face (its still animated by train.synth), one
    micro-expression at 1.5 s, the first second neutral (tests/y4m.py)."""
    frames, _ = event_clip_frames(seconds=4.0, onsets=(1.5,), labels=("positive",), counter=False)
    return frames


def strict_json(token):
    raise ValueError(f"{token} is not JSON: a browser's JSON.parse rejects the message")


class ClipTrack(VideoStreamTrack):
    """The clip's frames, looping, at 30 frames/s (aiortc's own pacing)."""

    def __init__(self, frames):
        super().__init__()
        self.frames, self.i = frames, 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        f = VideoFrame.from_ndarray(self.frames[self.i % len(self.frames)], format="bgr24")
        f.pts, f.time_base = pts, time_base
        self.i += 1
        return f


async def browser_side(peers: RtcPeers, frames, want: int = 45, timeout: float = 60.0):
    pc = RTCPeerConnection()
    pc.addTrack(ClipTrack(frames))
    channel = pc.createDataChannel("events")
    messages, got = [], []
    channel.on("message", messages.append)

    async def consume(track):
        while True:
            try:
                got.append((await track.recv()).to_ndarray(format="bgr24"))
            except MediaStreamError:
                return

    pc.on("track", lambda track: asyncio.ensure_future(consume(track)))
    await pc.setLocalDescription(await pc.createOffer())
    answer = await asyncio.to_thread(peers.answer, {"sdp": pc.localDescription.sdp, "type": "offer"})
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    live = peers.app.sessions[answer["id"]].live
    last_t = live.last_t
    rows_before = len(live.rows)
    channel.send("clear")            # the page's "Clear events" button
    await asyncio.sleep(0.5)
    await pc.close()
    return answer["id"], got, messages, (rows_before, len(live.rows)), last_t


def test_a_peer_streams_frames_and_gets_annotated_frames_back(app):
    peers = RtcPeers(app)
    app.rtc = peers
    frames = clip_frames()
    sid, got, messages, (rows_before, rows_after), last_t = asyncio.run(browser_side(peers, frames, want=100))
    assert len(got) >= 100 and got[0].shape == (480, 640, 3)
    # the pipeline's clock is the sender's (RTP timestamps, 1/30 s apart to a tick of the 90 kHz
    # clock), not the arrival times (which land anywhere between frames)
    assert last_t > 3.0 and abs(last_t * 30 - round(last_t * 30)) < 0.01, last_t
    session = app.sessions.get(sid)
    messages = [json.loads(m, parse_constant=strict_json) for m in messages]   # what JSON.parse accepts
    # the micro-expression's row came over the data channel (unlabelled here: no recogniser)
    rows = [r for m in messages for r in m.get("rows", [])]
    assert any(r["kind"] == "micro" and r["status"] == "final" and r["confidence"] is None for r in rows), rows
    assert rows_before >= 1 and rows_after == 0                               # "clear" from the page emptied it
    stats = [m["stats"] for m in messages if "stats" in m]
    assert stats and stats[-1]["frames"] >= 30 and stats[-1]["frames_with_face"] >= 0.9 * stats[-1]["frames"], stats[-1:]
    # the frames that came back carry the overlay: the face box (green) is drawn on them, not on the input
    green = lambda im: int(((im[:, :, 1] > 180) & (im[:, :, 0] < 120) & (im[:, :, 2] < 120)).sum())  # noqa: E731
    assert max(green(g) for g in got[-10:]) > 5 * max(green(f) for f in frames) + 200
    # the connection closed: its session goes too
    deadline = time.monotonic() + 30
    while sid in app.sessions and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sid not in app.sessions
    assert session is None or session.closed


@pytest.mark.parametrize("offer, match", [
    ({"type": "answer", "sdp": "v=0"}, "offer"),
    ({"type": "offer"}, "offer"),
    ({"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}, "video"),
    ("not a dict", "offer"),
])
def test_malformed_offers_are_refused_with_the_reason(app, offer, match):
    peers = RtcPeers(app)
    try:
        with pytest.raises(ValueError, match=match):
            peers.answer(offer)
        assert not app.sessions  # nothing was opened for it
    finally:
        peers.close()


def test_an_offer_that_fails_negotiation_leaves_no_session(app):
    peers = RtcPeers(app)
    try:
        with pytest.raises(ValueError, match="SDP could not be read"):
            peers.answer({"type": "offer", "sdp": "v=0\r\nm=video garbage\r\n"})
        assert not app.sessions
    finally:
        peers.close()


def test_the_page_and_the_offer_need_gradios_login_when_the_demo_has_one(tmp_path):
    """run_live.py --gradio --auth USER:PASSWORD: the WebRTC routes sit beside Gradio's, outside
    its own login checks, so they check its session cookie themselves."""
    import socket

    import httpx

    from realtime.frontends.webapp import build_app
    from realtime.frontends.webrtc import mount

    demo = build_app(WebConfig(engine="none", work_dir=str(tmp_path / "web")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                auth=("ana", "s3cret"))
    try:
        mount(demo)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.get("/webrtc").status_code == 302                            # to the login page
            r = c.post("/webrtc/offer", json={"type": "offer", "sdp": "v=0"})
            assert r.status_code == 401 and "log in" in r.json()["error"]
            assert c.post("/login", data={"username": "ana", "password": "wrong"}).status_code >= 400
            assert c.get("/webrtc").status_code == 302
            c.post("/login", data={"username": "ana", "password": "s3cret"})
            page = c.get("/webrtc")
            assert page.status_code == 200 and "live over WebRTC" in page.text
            r = c.post("/webrtc/offer", json={"type": "offer", "sdp": "v=0"})   # past the login: judged on its content
            assert r.status_code == 400 and "video" in r.json()["error"]
        assert not demo.moext_app.sessions
    finally:
        demo.close()
        demo.moext_app.close()
