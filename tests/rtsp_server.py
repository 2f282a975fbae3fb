"""A real RTSP camera for the tests and the bench: GStreamer's gst-rtsp-server (Debian).

Run it with Debian's ``/usr/bin/python3`` (where ``gi`` lives), never with the project's venv:

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --background bg.rgb --person person.rgb

It serves ``rtsp://127.0.0.1:PORT/cam`` (more mounts with ``--mounts``): a live H.264 camera at
``--fps`` in which people (the raw RGB ``--person`` image) cross a still background (raw RGB
``--background``) once every ``--period`` seconds. Positions follow the wall clock, so the scene
goes on where it would have been after the server is stopped and started again, like a real
camera that dropped off the network. Frames are composed with plain byte copies (no numpy in
Debian's Python) and encoded by x264 as they are made; every client of a mount shares one
encoder, as cameras do. With ``--user``/``--password`` the mounts need RTSP basic auth.
"""

from __future__ import annotations

import argparse
import math
import signal
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


class Scene:
    """People crossing a background, as raw RGB bytes, positioned by the wall clock."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.w, self.h = args.width, args.height
        self.background = open(args.background, "rb").read()
        self.person = open(args.person, "rb").read()
        self.pw, self.ph = args.person_width, args.person_height
        if len(self.background) != self.w * self.h * 3 or len(self.person) != self.pw * self.ph * 3:
            raise SystemExit("background/person sizes do not match their files")
        self.period, self.people = args.period, args.people

    def frame(self, now: float) -> bytes:
        out = bytearray(self.background)
        row = self.pw * 3
        for i in range(self.people):
            phase = ((now / self.period) + i / self.people) % 1.0
            x = int(40 + (self.w - self.pw - 80) * phase)
            y = int((self.h - self.ph) // 2 + 12 * math.sin(2 * math.pi * 3 * phase))
            y = max(0, min(self.h - self.ph, int(y + (i - (self.people - 1) / 2) * 40)))
            for r in range(self.ph):
                start = ((y + r) * self.w + x) * 3
                out[start : start + row] = self.person[r * row : (r + 1) * row]
        return bytes(out)


class CameraFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, scene: Scene, fps: int, bitrate_kbps: int) -> None:
        super().__init__()
        self.scene, self.fps = scene, fps
        caps = f"video/x-raw,format=RGB,width={scene.w},height={scene.h},framerate={fps}/1"
        self.set_launch(
            f"( appsrc name=src is-live=true format=time do-timestamp=true caps={caps} ! videoconvert ! "
            f"video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast bitrate={bitrate_kbps} "
            f"key-int-max={fps} ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"
        )
        self.set_shared(True)
        self.connect("media-configure", self._configure)

    def _configure(self, factory, media) -> None:
        src = media.get_element().get_child_by_name("src")
        timer = {"id": GLib.timeout_add(int(1000 / self.fps), self._push, src)}

        def stop(*_):
            if timer["id"]:
                GLib.source_remove(timer["id"])
                timer["id"] = 0

        media.connect("unprepared", stop)

    def _push(self, src) -> bool:
        data = self.scene.frame(time.time())
        src.emit("push-buffer", Gst.Buffer.new_wrapped(data))
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mounts", default="/cam", help="comma-separated mount points, all showing the scene")
    parser.add_argument("--background", required=True, help="raw RGB, --width x --height")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--person", required=True, help="raw RGB, --person-width x --person-height")
    parser.add_argument("--person-width", type=int, default=300)
    parser.add_argument("--person-height", type=int, default=300)
    parser.add_argument("--people", type=int, default=1)
    parser.add_argument("--period", type=float, default=8.0, help="seconds one person takes to cross")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--bitrate", type=int, default=2000, help="kb/s")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    Gst.init(None)
    scene = Scene(args)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
    for mount in args.mounts.split(","):
        factory = CameraFactory(scene, args.fps, args.bitrate)
        if args.user:
            permissions = GstRtspServer.RTSPPermissions()
            permissions.add_permission_for_role("user", "media.factory.access", True)
            permissions.add_permission_for_role("user", "media.factory.construct", True)
            factory.set_permissions(permissions)
        mounts.add_factory(mount, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"serving rtsp://127.0.0.1:{args.port}{args.mounts.split(',')[0]}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
