"""Do real browsers show upscale.py's outputs frame by frame as they should? (Not part of the
unit suite: it needs a browser.) A 4-second clip of 60 frames, each brighter than the one
before, 1/30 s apart and then 1/10 s apart (variable frame rate), is upscaled x2 into each
codec a browser plays (H.264 with its B-frames, AV1, VP9); each output is played in headless
Chromium at quarter speed, and for every frame the browser presents
(requestVideoFrameCallback) the page reports its media time and its mean level. Prints, per
codec, how many frames were shown, whether they came in order, and the largest gap between a
frame's shown time and the nearest source frame time; exits 1 if any output is shown wrongly
(a browser on a busy machine may skip a frame; more than a tenth skipped counts as wrong).

    apt-get install chromium        # Debian's; any Chromium or Chrome will do
    python tests/browser_play.py [--browser PATH] [--codecs h264 av1 vp9]
"""
import argparse
import http.server
import json
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import SCRIPT, cli_env  # noqa: E402
from test_fidelity import rising_vfr_clip  # noqa: E402

import upscale  # noqa: E402

FRAMES = 60

PAGE = """<html><body><video id="v" muted playsinline></video><canvas id="c"></canvas><script>
const v = document.getElementById('v'), c = document.getElementById('c');
const g = c.getContext('2d', {willReadFrequently: true}), shown = [];
const report = (kind, data) => fetch('/' + kind + '?' + encodeURIComponent(JSON.stringify(data)));
function onFrame(now, meta) {
  c.width = v.videoWidth; c.height = v.videoHeight; g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0; for (let i = 0; i < d.length; i += 4) sum += d[i];
  shown.push([meta.mediaTime * 1000, sum / (d.length / 4)]);
  v.requestVideoFrameCallback(onFrame);
}
v.requestVideoFrameCallback(onFrame);
v.onended = () => report('result', shown);
v.onerror = () => report('error', v.error.code + ' ' + v.error.message);
v.src = location.search.slice(1);
v.playbackRate = 0.25;       // slow: a busy machine drops fewer frames
v.play().catch(e => report('error', String(e)));
</script></body></html>"""


def serve(folder, reports):
    """An HTTP server on a free local port serving folder and the page; what the page
    reports goes into the queue reports. Returns the server (running in a thread)."""
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            path, _, query = self.path.partition("?")
            if path in ("/result", "/error"):
                reports.put((path[1:], json.loads(urllib.parse.unquote(query))))
                self.send_response(204)
                self.end_headers()
            elif path == "/page.html":
                body = PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def play(browser, url, profile, reports, seconds=30):
    """(kind, data) that the page reported for url: ("result", [[ms, level], ...]) or
    ("error", text); ("error", "no report") when the browser said nothing in time."""
    proc = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu",
                             "--disable-quic", "--no-first-run", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync",
                             "--autoplay-policy=no-user-gesture-required",
                             f"--user-data-dir={profile}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return reports.get(timeout=seconds)
    except queue.Empty:
        return "error", "no report"
    finally:
        proc.kill()
        proc.wait()


def verdict(shown, source_ms):
    """(frames shown, whether each was brighter than the one before, largest ms between a
    frame's shown time and the nearest of source_ms, source times in ms not shown). A
    browser may skip a frame when the machine is busy; the frames it shows must still be in
    order, each at its time."""
    levels = [level for _, level in shown]
    in_order = all(b > a for a, b in zip(levels, levels[1:]))
    worst = max((min(abs(t - s) for s in source_ms) for t, _ in shown),
                default=float("inf"))
    missing = [round(s) for s in source_ms if min(abs(t - s) for t, _ in shown) > 1]
    return len(shown), in_order, worst, missing


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--browser", default=shutil.which("chromium") or
                        shutil.which("google-chrome") or "chromium")
    parser.add_argument("--codecs", nargs="+", default=["h264", "av1", "vp9"],
                        choices=[n for n, c in upscale.CODECS.items() if c.piped])
    args = parser.parse_args()
    if not shutil.which(args.browser):
        sys.exit(f"no browser at {args.browser}; install chromium or pass --browser")
    ffmpeg = upscale.find_ffmpeg()
    reports = queue.Queue()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source_ms = [t * 1000 for t in rising_vfr_clip(ffmpeg, folder / "rising.mkv", FRAMES)]
        server = serve(folder, reports)
        print(f"| codec | frames shown (of {FRAMES}) | in order | largest time error | "
              "not shown (ms) |")
        print("|---|---|---|---|---|")
        for codec in args.codecs:
            out = folder / f"rising_{codec}.{upscale.CODECS[codec].container}"
            subprocess.run([sys.executable, str(SCRIPT), str(folder / "rising.mkv"), "-q",
                            "--model", "cubic", "--scale", "2", "--segment", "1",
                            "--codec", codec, "-o", str(out)], env=cli_env(), check=True)
            url = f"http://127.0.0.1:{server.server_port}/page.html?{out.name}"
            kind, data = play(args.browser, url, folder / f"profile-{codec}", reports)
            if kind != "result":
                print(f"| {codec} | not played: {data} | | | |")
                failed = True
                continue
            count, in_order, worst, missing = verdict(data, source_ms)
            print(f"| {codec} | {count} | {'yes' if in_order else 'NO'} | {worst:.1f} ms | "
                  f"{' '.join(map(str, missing)) or '-'} |")
            failed |= count < FRAMES * 0.9 or not in_order or worst > 1
        server.shutdown()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
