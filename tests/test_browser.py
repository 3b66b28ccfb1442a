"""The web demo end to end in real headless Chromium (Debian's, driven by Playwright).

Chromium's fake webcam plays a Y4M made from a real face (train.synth animates a still of
the bundled real clip) with clear synthetic micro-expressions, each frame stamped with its
number (tests/y4m.py). The test starts the app in this process, presses "Click to Access
Webcam" and the record button, and checks that the server processed that clip's frames
(face found, frame numbers readable on the annotated frames that came back) and that an
event row appeared in the live table; a second browser page (its own session) that does
not stream sees no events. The recording tab gets a clip uploaded; its events table and
the annotated video (played in the page) are checked.

Round-trip fps and camera-to-screen latency are measured in the page: a
requestVideoFrameCallback on the webcam preview notes when each source frame number is
shown; when an annotated image arrives, its frame number is read from its pixels at the
next animation frame; latency = that moment - when the same source frame was shown in
the preview. Round-trip fps = annotated images shown per second. Both are printed (run
with -s) and written to the test's temp folder (webapp_latency.json).

A third test does the same on the /webrtc page (realtime.frontends.webrtc: the webcam as a
video track, the annotated frames back as one, events over a data channel) and prints the
same figures for that transport.

MOEXT_SCREENSHOT=docs/webapp.png saves the page screenshot there (else in the temp folder);
MOEXT_WEBRTC_SCREENSHOT=docs/webrtc.png the WebRTC page's.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import chromium_path
from engines.recognizer import load_engine
from realtime.frontends import webrtc
from realtime.frontends.webapp import build_app
from realtime.frontends.webcodec import BrowserVideoWriter
from realtime.frontends.websession import WebConfig
from y4m import COUNTER_BITS, COUNTER_CELL, COUNTER_ORIGIN, event_clip_frames, stamp_counter, write_y4m

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FLAGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--headless", "--no-sandbox",
         "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic", "--no-first-run"]

MEASURE_JS = """
([x0, y0, cell, bits, camSel, outSel]) => {
  const m = {cam: [], out: []};
  window.__moext = m;
  const w = cell * (bits + 2), h = cell;
  const canvas = document.createElement('canvas');
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const read = (src, sw, sh) => {          // frame number drawn by tests/y4m.py, or null
    if (!sw || !sh) return null;
    const sx = sw / 640, sy = sh / 480;    // the strip only: cheap enough for every frame
    ctx.drawImage(src, x0 * sx, y0 * sy, w * sx, h * sy, 0, 0, w, h);
    const d = ctx.getImageData(0, 0, w, h).data;
    const level = (i) => {
      const half = Math.floor(cell / 2), r = Math.max(1, Math.floor(cell / 4)), cx = i * cell + half, cy = half;
      let s = 0, k = 0;
      for (let y = cy - r; y < cy + r; y++) for (let x = cx - r; x < cx + r; x++) {
        const j = 4 * (y * w + x); s += 0.299 * d[j] + 0.587 * d[j + 1] + 0.114 * d[j + 2]; k++;
      }
      return s / k;
    };
    if (level(0) < 160 || level(bits + 1) > 96) return null;
    let n = 0;
    for (let i = 1; i <= bits; i++) n = (n << 1) | (level(i) > 128 ? 1 : 0);
    return n;
  };
  const watchVideo = (sel, list, keepNull) => {   // every frame a <video> shows: [number, when shown]
    const v = document.querySelector(sel);
    if (!v || !v.requestVideoFrameCallback) { setTimeout(() => watchVideo(sel, list, keepNull), 50); return; }
    const onFrame = (now) => {
      const n = read(v, v.videoWidth, v.videoHeight);
      if (n !== null || keepNull) list.push([n, now]);
      if (list.length > 20000) list.splice(0, 10000);
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  };
  watchVideo(camSel, m.cam, false);   // source frame n shown in the preview at `now`
  if (outSel) { watchVideo(outSel, m.out, true); return; }   // annotated frames as video (WebRTC)
  let last = null;
  const onOut = () => {
    const img = document.querySelector('#annotated img');
    if (!img || !img.src || img.src === last) return;
    last = img.src;
    const probe = new Image();
    probe.onload = () => requestAnimationFrame((t) => {
      m.out.push([read(probe, probe.naturalWidth, probe.naturalHeight), t]);  // shown at the next paint
    });
    probe.src = img.src;
  };
  new MutationObserver(onOut).observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}
"""

VIDEO_PLAYS_JS = """
async (sel) => {
  const v = document.querySelector(sel);
  if (!v) return {error: 'no video element'};
  const t0 = performance.now();
  while (v.readyState < 2 && performance.now() - t0 < 15000) await new Promise(r => setTimeout(r, 100));
  v.muted = true;
  try { await v.play(); } catch (e) { return {error: String(e), readyState: v.readyState}; }
  const c0 = v.currentTime;
  await new Promise(r => setTimeout(r, 1500));
  return {readyState: v.readyState, videoWidth: v.videoWidth, videoHeight: v.videoHeight,
          duration: v.duration, advanced: v.currentTime - c0, error: v.error ? v.error.code : null};
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def camera_to_screen_ms(cam: list, out: list, fps: float = 30.0, loop: int = 180) -> list[float]:
    """Latency of each annotated frame: when it was painted minus when its source frame
    was shown in the webcam preview. Preview callbacks can skip frames under load, so
    the source frame's time comes from the latest preview sample at or before it in the
    same pass of the loop (at most 10 frames earlier), plus the frames between at ``fps``."""
    cam = sorted(cam, key=lambda c: c[1])
    times = np.array([c[1] for c in cam])
    lat = []
    for n, t in out:
        if n is None:
            continue
        j = int(np.searchsorted(times, t, side="right"))  # preview samples up to the paint
        for k_n, k_t in reversed(cam[max(0, j - 400):j]):
            back = (n - k_n) % loop
            if back <= 10 and t - k_t < 0.5 * loop / fps * 1000:
                lat.append(t - (k_t + back / fps * 1000))
                break
    return lat


def event_rows(text: str) -> int:
    """Event rows in a table's visible text (each row has a kind cell)."""
    return sum(1 for cell in text.split() if cell in ("micro", "macro"))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The fake webcam's Y4M (6 s loop, micro-expressions at 1.5 s and 3.5 s, frame numbers
    stamped) and a clip to upload (the first 3.5 s, one micro-expression, no stamps)."""
    d = tmp_path_factory.mktemp("browser-media")
    frames, truth = event_clip_frames(seconds=6.0, onsets=(1.5, 3.5), labels=("positive", "surprise"),
                                      counter=False)
    cam = write_y4m(d / "webcam.y4m", (stamp_counter(f, i) for i, f in enumerate(frames)), fps=30)
    clip = d / "browser_upload_clip.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    for f in frames[:105]:
        w.write(f)
    w.release()
    return {"dir": d, "y4m": cam, "clip": clip, "truth": truth}


@pytest.fixture(scope="module")
def server(media, tmp_path_factory):
    gradio_tmp = tmp_path_factory.mktemp("gradio")
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(gradio_tmp)
    # the bundled demo weights on the default engine, as a user gets them (run_live.py --gradio)
    rec, _ = load_engine("auto", "cpu")
    demo = build_app(WebConfig(), rec)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                max_file_size="200mb")
    webrtc.mount(demo)  # as realtime.frontends.webapp.launch does
    yield {"url": f"http://127.0.0.1:{port}/", "app": demo.moext_app, "gradio_tmp": gradio_tmp}
    demo.close()
    demo.moext_app.close()
    rec.close()
    if old is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = old


@pytest.fixture(scope="module")
def browser(media):
    from playwright.sync_api import sync_playwright  # optional (the test extra); the module is skipped without it

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                               args=FLAGS + [f"--use-file-for-fake-video-capture={media['y4m']}"])
        yield b
        b.close()


def open_page(browser, url):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})  # fresh profile state per context
    ctx.grant_permissions(["camera"])
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="domcontentloaded")  # the page never goes network-idle (streams)
    return page


def test_live_webcam_stream_end_to_end_and_sessions_isolated(server, browser, media, tmp_path):
    app = server["app"]
    watcher = open_page(browser, server["url"])  # a second session that does not stream
    page = open_page(browser, server["url"])
    page.get_by_text("Click to Access Webcam").click()
    page.wait_for_selector("#webcam video")
    page.evaluate(MEASURE_JS, [*COUNTER_ORIGIN, COUNTER_CELL, COUNTER_BITS, "#webcam video", None])
    page.locator('#webcam button[aria-label="capture photo"], #webcam button[aria-label="start recording"]'
                 ).first.click()
    watcher.get_by_role("button", name="Clear events").click()  # gives the watcher its own server session

    deadline = time.monotonic() + 120
    first_out = None
    rows = 0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        n_out = page.evaluate("() => window.__moext.out.length")
        if n_out and first_out is None:
            first_out = time.monotonic()
        rows = event_rows(page.locator("#live-events").inner_text())
        if rows >= 1 and first_out is not None and time.monotonic() - first_out >= 18:
            break
    stats_text = page.locator("#live-stats").inner_text()
    m = page.evaluate("() => window.__moext")
    shot = Path(os.environ.get("MOEXT_SCREENSHOT") or tmp_path / "webapp.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)

    # the server processed that clip's frames, found the face and spotted events
    sessions = list(app.sessions.values())
    streaming = [s for s in sessions if s.live.frames > 0]
    assert len(streaming) == 1, [s.live.stats() for s in sessions]
    s = streaming[0].live.stats()
    assert s["frames"] >= 50 and s["frames_with_face"] >= 0.9 * s["frames"], s
    assert s["events"] >= 1, s
    assert rows >= 1, page.locator("#live-events").inner_text()
    # frame numbers of the Y4M are readable on the annotated frames that came back
    out = m["out"]
    numbers = [n for n, _ in out if n is not None]
    assert len(out) >= 50 and len(numbers) >= 0.8 * len(out)
    assert len(set(numbers)) >= 30 and max(numbers) < 180  # the clip's 180 frames, looping

    figures = round_trip_figures(m, s, stats_text)

    # the other session saw none of it
    assert event_rows(watcher.locator("#live-events").inner_text()) == 0
    idle = [x for x in sessions if x.live.frames == 0]
    assert len(idle) == 1 and idle[0].live.table().empty and idle[0].id != streaming[0].id
    for p in (page, watcher):
        p.context.close()  # the stream stops: later tests (the WebRTC one) measure without it
    (tmp_path / "webapp_latency.json").write_text(json.dumps(figures, indent=2))
    print("\nlive tab, 640x480:", json.dumps(figures))
    assert figures["round_trip_fps"] >= 3 and figures["latency_samples"] >= 20 and 0 < figures["latency_ms_p50"] < 2000


def round_trip_figures(m: dict, s: dict, stats_text: str) -> dict:
    """Round-trip fps and camera-to-screen latency over the last 15 s of a run (the page's
    measurements ``m``) with the server's own figures ``s`` (LiveStream.stats)."""
    out = m["out"]
    t_end = out[-1][1]
    window = [o for o in out if o[1] >= t_end - 15_000]
    fps = (len(window) - 1) / ((window[-1][1] - window[0][1]) / 1000)
    lat = np.array(camera_to_screen_ms(m["cam"], window))
    return {"round_trip_fps": round(fps, 1), "latency_ms_p50": round(float(np.median(lat)), 1) if lat.size else None,
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
            "latency_samples": int(lat.size), "server_fps": s["fps"], "server_ms_p50": s["server_ms_p50"],
            "frames": s["frames"], "events": s["events"], "stages_p50": {k: v["p50"] for k, v in s["stages"].items()},
            "resolution": "640x480", "preview_samples": len(m["cam"]),
            "stats_text": next((x for x in stats_text.splitlines() if "fps" in x), "")}


def test_webrtc_page_streams_both_ways_and_closes_its_session(server, browser, media, tmp_path):
    """/webrtc (realtime.frontends.webrtc), in the same server as the Gradio page: the fake
    webcam goes to the server as a video track, the annotated frames come back as a video
    track and the events over the data channel; measured as the Gradio tab is. Stopping
    closes the connection and its session."""
    app = server["app"]
    before = set(app.sessions)
    page = open_page(browser, server["url"] + "webrtc")
    page.evaluate(MEASURE_JS, [*COUNTER_ORIGIN, COUNTER_CELL, COUNTER_BITS, "#local", "#annotated"])
    page.click("#start")
    deadline = time.monotonic() + 90
    first_out, rows = None, 0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if first_out is None and page.evaluate("() => window.__moext.out.length"):
            first_out = time.monotonic()
        rows = event_rows(page.locator("#events").inner_text())
        if rows >= 1 and first_out is not None and time.monotonic() - first_out >= 18:
            break
    assert page.locator("#error").inner_text() == ""
    stats_text = page.locator("#stats").inner_text()
    shot = Path(os.environ.get("MOEXT_WEBRTC_SCREENSHOT") or tmp_path / "webrtc.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    m = page.evaluate("() => window.__moext")
    new = [app.sessions[k] for k in set(app.sessions) - before]
    assert len(new) == 1, list(app.sessions)
    session = new[0]
    s = session.live.stats()
    assert s["frames"] >= 50 and s["frames_with_face"] >= 0.9 * s["frames"], s
    assert s["events"] >= 1 and rows >= 1, (s, page.locator("#events").inner_text())
    numbers = [n for n, _ in m["out"] if n is not None]
    assert len(m["out"]) >= 50 and len(numbers) >= 0.8 * len(m["out"])
    assert len(set(numbers)) >= 30 and max(numbers) < 180
    figures = round_trip_figures(m, s, stats_text)
    (tmp_path / "webrtc_latency.json").write_text(json.dumps(figures, indent=2))
    print("\nWebRTC page, 640x480:", json.dumps(figures))
    assert figures["round_trip_fps"] >= 3 and figures["latency_samples"] >= 20

    page.click("#stop")
    deadline = time.monotonic() + 30
    while session.id in app.sessions and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session.id not in app.sessions and session.closed
    page.context.close()


def test_recording_tab_upload_events_and_video_plays(server, browser, media):
    app = server["app"]
    page = open_page(browser, server["url"])
    page.get_by_role("tab", name="Recording").click()
    page.locator("#upload input[type=file]").set_input_files(str(media["clip"]))
    page.wait_for_selector("#upload >> text=browser_upload_clip.avi")
    page.locator("#analyse").click()
    page.wait_for_function("() => /micro|macro/.test(document.querySelector('#rec-events')?.innerText || '')",
                           timeout=120_000)
    table = page.locator("#rec-events").inner_text()
    assert event_rows(table) >= 1
    page.wait_for_selector("#rec-video video")
    played = page.evaluate(VIDEO_PLAYS_JS, "#rec-video video")
    assert played.get("error") is None, played
    assert played["readyState"] >= 2 and played["videoWidth"] == 640 and played["advanced"] > 0.2, played
    assert page.locator("#rec-plot img, #rec-plot svg, #rec-plot canvas").count() >= 1
    files = "".join(page.locator("#rec-files").inner_text().split())
    assert "browser_upload_clip.events.jsonl" in files and "browser_upload_clip.signal.csv" in files
    # the upload was deleted from Gradio's upload folder after processing
    assert not list(Path(server["gradio_tmp"]).rglob("browser_upload_clip.avi"))
    assert not [p for s in app.sessions.values() for p in s.dir.rglob("upload*")]
    page.context.close()


def test_vp8_fallback_plays_in_chromium(browser, tmp_path):
    """The encoder used without PyAV (OpenCV's VP8/WebM) plays in Chromium too."""
    w = BrowserVideoWriter(tmp_path / "fallback", fps=30, codec="vp8")
    for i in range(45):
        w.write(np.full((240, 320, 3), (i * 5) % 255, np.uint8))
    w.close()
    html = tmp_path / "page.html"
    html.write_text(f'<video id="v" src="{w.path.name}" preload="auto"></video>')
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(html.as_uri())
    played = page.evaluate(VIDEO_PLAYS_JS, "#v")
    assert played.get("error") is None and played["videoWidth"] == 320 and played["advanced"] > 0.2, played
    ctx.close()


def test_recording_tab_shows_each_faces_events(server, browser, tmp_path_factory):
    """Two people side by side (train.synth.multiface, 30 fps): the page's events table
    lists events of both faces (#0 and #1), each face followed on its own."""
    from train.synth.multiface import pick_identities, write_multi_clip

    d = tmp_path_factory.mktemp("two-faces")
    clip = d / "two_faces.avi"
    write_multi_clip(clip, pick_identities(2), fps=30, seconds=9.0, seed=5)
    page = open_page(browser, server["url"])
    page.get_by_role("tab", name="Recording").click()
    page.locator("#upload input[type=file]").set_input_files(str(clip))
    page.wait_for_selector("#upload >> text=two_faces.avi")
    page.locator("#analyse").click()
    page.wait_for_function("() => /micro|macro/.test(document.querySelector('#rec-events')?.innerText || '')",
                           timeout=120_000)
    table = page.locator("#rec-events").inner_text()
    faces = {cell for cell in table.split() if cell in ("#0", "#1", "#2")}
    shot = os.environ.get("MOEXT_SCREENSHOT_FACES")
    if shot:
        page.screenshot(path=shot, full_page=True)
    assert faces == {"#0", "#1"}, table
    assert event_rows(table) >= 4, table
    page.context.close()
