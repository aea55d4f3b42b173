"""A local stand-in for the Hugging Face Hub, reached through HF_ENDPOINT.

It answers the requests huggingface_hub's hf_hub_download makes, the way the Hub does
for a file stored with Git LFS: ``HEAD /{repo}/resolve/{revision}/{file}`` is a 302
to a download host (another host name, like the Hub's CDN) carrying the metadata in
``X-Repo-Commit``, ``X-Linked-Etag`` (the file's sha256) and ``X-Linked-Size``; the
GET then goes to that host. An unknown file is a 404 with ``X-Error-Code:
EntryNotFound``. The files served are real safetensors files: an smp encoder's
ImageNet-shaped state dict with random weights.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def encoder_weights(encoder: str, seed: int = 0) -> bytes:
    """A safetensors file shaped like `encoder`'s ImageNet weights (random values)."""
    import segmentation_models_pytorch as smp
    import torch
    from safetensors.torch import save

    torch.manual_seed(seed)
    rgb = smp.encoders.get_encoder(encoder, in_channels=3, weights=None)
    for p in rgb.parameters():
        p.data.normal_(0, 0.05)
    return save({k: v.contiguous() for k, v in rgb.state_dict().items()})


@dataclass
class Served:
    body: bytes
    sha256: str
    corrupt: bool = False  # the bytes sent differ from the announced sha256


@dataclass
class FakeHub:
    files: dict[tuple[str, str, str], Served] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve_encoder(self, encoder: str, *, corrupt: bool = False, seed: int = 0) -> Served:
        """Serve `encoder`'s ImageNet weights at smp's repo and revision."""
        import segmentation_models_pytorch as smp

        s = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]
        body = encoder_weights(encoder, seed)
        served = Served(body, hashlib.sha256(body).hexdigest(), corrupt)
        self.files[(s["repo_id"], s["revision"], "model.safetensors")] = served
        return served

    def downloads(self) -> int:
        """How many file bodies were sent."""
        with self._lock:
            return sum(1 for method, path in self.requests if method == "GET" and "/cdn/" in path)

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _resolve(self, send_body: bool) -> None:
                with hub._lock:
                    hub.requests.append((self.command, self.path))
                if self.path.startswith("/cdn/"):
                    return self._cdn(send_body)
                parts = self.path.split("/resolve/", 1)
                repo = parts[0].lstrip("/")
                revision, _, filename = parts[1].partition("/") if len(parts) == 2 else ("", "", "")
                served = hub.files.get((repo, revision, filename))
                if served is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Error-Message", "Entry not found")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{hub.port}/cdn/{served.sha256}")
                self.send_header("X-Repo-Commit", revision)
                self.send_header("X-Linked-Etag", f'"{served.sha256}"')
                self.send_header("X-Linked-Size", str(len(served.body)))
                self.send_header("ETag", '"0123456789abcdef0123456789abcdef01234567"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _cdn(self, send_body: bool) -> None:
                sha = self.path.rsplit("/", 1)[-1]
                served = next((f for f in hub.files.values() if f.sha256 == sha), None)
                if served is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = served.body
                if served.corrupt:  # same length, damaged in the middle
                    mid = len(body) // 2
                    body = (
                        body[:mid]
                        + bytes(b ^ 0xFF for b in body[mid : mid + 64])
                        + body[mid + 64 :]
                    )
                self.send_response(200)
                self.send_header("Content-Type", "binary/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", f'"{served.sha256}"')
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
                self._resolve(send_body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._resolve(send_body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
