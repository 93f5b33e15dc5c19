"""A local fake GCS for tests: `gs://BUCKET/...` served by `gcp-storage-emulator` on 127.0.0.1, no network.

    with gcs_emulator("pivot-test") as gcs:          # server up, bucket made, environment set
        path = gcs.path("run1")                      # epath.Path("gs://pivot-test/run1")
        ... trainer / evaluator / report code, Orbax checkpoints, child processes ...
    # environment restored, caches dropped, server stopped

The server runs in a child process (`python tests/gcs_emulator.py --serve`): its single-threaded HTTP server then
never competes for this process's GIL with JAX/Orbax threads, and it dies with its stdin pipe even if the test
process is killed. It keeps objects in memory and answers the GCS JSON API (uploads, media downloads with Range,
listing with prefix/delimiter, copy/rewrite, delete), which is what gcsfs, google-cloud-storage and TensorStore's
`gcs` kvstore driver use. The child patches three gaps of the emulator that real clients trip on:
  - x-goog-generation on object reads, and ifGenerationMatch / ifGenerationNotMatch on reads (304/412), uploads
    and deletes (412). Without them TensorStore takes every read object for "generation 0" and then rejects its
    own conditional write of the OCDBT manifest ("Malformed StorageGeneration": TensorStore rejects generation 0).
    Orbax saves failed so intermittently (2 of the first 10 runs of tests/test_gcs_emulator.py, load-dependent);
    the test `test_tensorstore_conditional_write_after_read` hits it every time without the patch.
  - objects.moveTo (gcsfs's rename) as copy + delete (atomic here: the server is single-threaded).
  - 405 instead of 501 for anything else unsupported: gcsfs retries a 501 5 times (~35 s) before failing.

What it cannot cover: tf.io.gfile (TensorFlow's own GCS client, which etils.epath uses for gs:// by default when
TensorFlow is installed, and which TFDS uses for a gs:// data_dir) has no endpoint override, so under the emulator
epath goes through fsspec/gcsfs instead (EPATH_USE_TF=false below). The two differ: gcsfs has no append mode
(open("a") warns and OVERWRITES), and an object appears only when its file is closed, not on flush().

Environment variables set while active (`GcsEmulator.env()`; the old values come back on exit):

  STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT
      gcsfs sends its JSON-API requests there (read on every request); google-cloud-storage's `Client()` uses it
      AND switches to anonymous credentials with no project. Orbax uses that client on gs:// paths
      (`gcs_utils.is_hierarchical_namespace_enabled`, called by `CheckpointManager.all_steps()`/`latest_step()`
      and by checkpoint deletion). The scheme is required by google-cloud-storage.
  TENSORSTORE_GCS_HTTP_URL=http://127.0.0.1:PORT
      TensorStore's `gcs` kvstore driver (Orbax array data, OCDBT manifests) uses it as base URL instead of
      https://storage.googleapis.com; read whenever a driver is opened.
  TENSORSTORE_GCS_BACKEND=gcs
      Orbax picks TensorStore's kvstore driver for gs:// from it (`gcs_utils.get_kvstore_for_gcs`, default "gcs");
      "gcs_grpc" would speak gRPC, which the emulator does not.
  GOOGLE_AUTH_TOKEN_FOR_TESTING=emulator
      TensorStore's credential lookup takes this fixed bearer token first, so it never reads
      GOOGLE_APPLICATION_CREDENTIALS / ~/.config/gcloud nor probes the GCE metadata server. TensorStore looks up
      its credentials ONCE per process (first gs:// access) and keeps them; a process that touched real gs://
      before the emulator was active keeps those credentials (the URL still comes from the variable above).
  EPATH_USE_TF=false
      etils.epath otherwise sends gs:// through tf.io.gfile (TensorFlow is installed), which knows nothing of the
      emulator. With "false" it uses fsspec -> gcsfs. etils caches the decision (`gpath._is_tf_installed`); the
      cache is cleared here on enter and exit.
  FSSPEC_GCS_TOKEN=anon
      etils builds `fsspec.filesystem("gcs")` without a token; gcsfs would then try gcloud credentials, its token
      cache and the GCE metadata server before falling back to anonymous. fsspec reads FSSPEC_<PROTO>_<KWARG>
      only when it is imported, so child processes get it from the variable and this process from
      `fsspec.config.conf["gcs"]["token"] = "anon"` (also restored on exit).
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false
      gcsfs >= 2026.x by default exports `ExtendedGcsFileSystem`, which asks the Storage Control gRPC API for the
      bucket layout (zonal / hierarchical) on every open(), mkdir, rename... and, the emulator speaking no gRPC,
      never caches the failed answer. gcsfs reads this variable when it is imported; for this process (gcsfs may
      already be imported) the plain `gcsfs.core.GCSFileSystem` is registered with fsspec for "gs"/"gcs" while
      active.
  NO_GCE_CHECK=true, GCE_METADATA_HOST / GCE_METADATA_ROOT / GCE_METADATA_IP=127.0.0.1:9 (closed port)
      Belt and braces: any client that still looks for Google credentials must not wait on (or reach) the real
      metadata server. google-auth reads these at import time (so they matter in child processes); TensorStore
      reads GCE_METADATA_ROOT when it probes; gcsfs skips its "cloud" method under NO_GCE_CHECK=true.
  CLOUDSDK_CONFIG=<empty temp dir>, GOOGLE_APPLICATION_CREDENTIALS unset
      A developer's real gcloud/ADC credentials are never found, so nothing tries to refresh a token against
      oauth2.googleapis.com.
  NO_PROXY / no_proxy += 127.0.0.1,localhost
      requests (google-cloud-storage) and curl (TensorStore) honour proxy variables; the emulator is local.

Caches dropped on enter and exit, because several libraries keep the first client they built:
`gcsfs.GCSFileSystem.clear_instance_cache()` (both the core and the extended class), etils'
`fsspec_backend._get_filesystem` (it holds its own gcsfs instance), `gpath._is_tf_installed`,
`gpath._is_zonal_gcs_bucket`, and Orbax's `gcs_utils.get_bucket` (an lru_cache of google-cloud-storage buckets).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

DEFAULT_BUCKET = "pivot-test"
_CLOSED_PORT = "127.0.0.1:9"  # discard port: nothing listens, connections are refused at once


@dataclasses.dataclass
class GcsEmulator:
    """A running emulator. `activated()` points every GCS client of this process and its children at it."""

    host: str
    port: int
    bucket: str
    _process: subprocess.Popen | None = dataclasses.field(default=None, repr=False)
    _credentials_dir: str | None = dataclasses.field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str | None]:
        """The variables `activated()` sets (None: removed)."""
        no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")),
                                           "127.0.0.1,localhost"]))
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "TENSORSTORE_GCS_HTTP_URL": self.url,
            "TENSORSTORE_GCS_BACKEND": "gcs",
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
            "EPATH_USE_TF": "false",
            "FSSPEC_GCS_TOKEN": "anon",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "NO_GCE_CHECK": "true",
            "GCE_METADATA_HOST": _CLOSED_PORT,
            "GCE_METADATA_ROOT": _CLOSED_PORT,
            "GCE_METADATA_IP": _CLOSED_PORT,
            "CLOUDSDK_CONFIG": self._credentials_dir or tempfile.gettempdir(),
            "GOOGLE_APPLICATION_CREDENTIALS": None,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    @contextlib.contextmanager
    def activated(self) -> Iterator[GcsEmulator]:
        """Sets `env()`, drops cached clients and routes fsspec "gs" to plain gcsfs; undoes all of it on exit."""
        saved_env = {name: os.environ.get(name) for name in self.env()}
        saved_fsspec = _patch_fsspec()
        try:
            _set_env(self.env())
            _drop_client_caches()
            yield self
        finally:
            _set_env(saved_env)
            _restore_fsspec(saved_fsspec)
            _drop_client_caches()

    def path(self, *parts: str):
        """`epath.Path("gs://BUCKET/parts...")` (reaches the emulator only while activated)."""
        from etils import epath

        return epath.Path(f"gs://{self.bucket}", *parts)

    def fs(self):
        """A fresh gcsfs filesystem on the emulator (anonymous, uncached), usable whether activated or not."""
        import gcsfs.core

        return gcsfs.core.GCSFileSystem(token="anon", endpoint_url=self.url, skip_instance_cache=True)

    def list_objects(self, prefix: str = "") -> list[str]:
        """Object names under `prefix` (no bucket), straight from the emulator's JSON API: no client library."""
        query = urllib.parse.urlencode({"prefix": prefix}) if prefix else ""
        with urllib.request.urlopen(f"{self.url}/storage/v1/b/{self.bucket}/o?{query}", timeout=10) as response:
            return sorted(item["name"] for item in json.load(response).get("items", []))

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(f"{self.url}/storage/v1/b?project=test", method="POST",
                                         data=json.dumps({"name": name}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.stdin.close()  # the server exits when its stdin closes
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        if self._process is not None:
            self._process.stdout.close()
        self._process = None
        if self._credentials_dir is not None:
            shutil.rmtree(self._credentials_dir, ignore_errors=True)
            self._credentials_dir = None


def start_emulator(bucket: str = DEFAULT_BUCKET, *, host: str = "127.0.0.1", timeout: float = 30.0) -> GcsEmulator:
    """Starts the server on a free port of `host` with `bucket` made; returns once it answers. Call `.stop()`."""
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", host, bucket],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    emulator = GcsEmulator(host=host, port=0, bucket=bucket, _process=process)
    try:
        line = process.stdout.readline()  # the child prints its port once it listens
        if not line.strip().isdigit():
            raise RuntimeError(f"GCS emulator did not start (exit code {process.poll()}, said {line!r})")
        emulator.port = int(line)
        _wait_until_ready(emulator, timeout)
        emulator._credentials_dir = tempfile.mkdtemp(prefix="gcs-emulator-no-credentials-")
    except BaseException:
        emulator.stop()
        raise
    return emulator


@contextlib.contextmanager
def gcs_emulator(bucket: str = DEFAULT_BUCKET, *, activate: bool = True, host: str = "127.0.0.1",
                 timeout: float = 30.0) -> Iterator[GcsEmulator]:
    """Runs an emulator with `bucket` for the block; with `activate`, every GCS client is pointed at it too."""
    emulator = start_emulator(bucket, host=host, timeout=timeout)
    try:
        if activate:
            with emulator.activated():
                yield emulator
        else:
            yield emulator
    finally:
        emulator.stop()


def _wait_until_ready(emulator: GcsEmulator, timeout: float) -> None:
    deadline, error = time.monotonic() + timeout, None
    while True:
        try:
            with urllib.request.urlopen(f"{emulator.url}/storage/v1/b/{emulator.bucket}", timeout=2) as response:
                if json.load(response).get("name") == emulator.bucket:
                    return
        except (urllib.error.URLError, OSError, ValueError) as e:
            error = e
        if time.monotonic() > deadline:
            raise RuntimeError(f"GCS emulator at {emulator.url} not ready after {timeout}s: {error}")
        if emulator._process.poll() is not None:
            raise RuntimeError(f"GCS emulator exited with code {emulator._process.returncode}")
        time.sleep(0.05)


def _set_env(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _patch_fsspec() -> tuple[dict, dict]:
    """Anonymous gcsfs by default and the plain (non-"extended") gcsfs class for gs://; returns what to restore."""
    import fsspec
    import fsspec.config
    import gcsfs.core
    from fsspec.registry import _registry  # `fsspec.registry` is the read-only view, not the module

    saved_conf = {proto: dict(fsspec.config.conf[proto]) if proto in fsspec.config.conf else None
                  for proto in ("gcs", "gs")}
    fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
    saved_registry = {proto: _registry.get(proto) for proto in ("gs", "gcs")}
    for proto in ("gs", "gcs"):
        fsspec.register_implementation(proto, gcsfs.core.GCSFileSystem, clobber=True)
    return saved_conf, saved_registry


def _restore_fsspec(saved: tuple[dict, dict]) -> None:
    import fsspec.config
    from fsspec.registry import _registry

    saved_conf, saved_registry = saved
    for proto, conf in saved_conf.items():
        if conf is None:
            fsspec.config.conf.pop(proto, None)
        else:
            fsspec.config.conf[proto] = conf
    for proto, cls in saved_registry.items():
        if cls is None:
            _registry.pop(proto, None)  # re-resolved lazily from known_implementations
        else:
            _registry[proto] = cls


def _drop_client_caches() -> None:
    """Forgets every cached GCS client/decision so the next use reads the current environment.

    Only modules already imported can hold a cache, so nothing is imported here (Orbax alone takes seconds).
    """
    for name in ("gcsfs", "gcsfs.core", "gcsfs.extended_gcsfs"):
        module = sys.modules.get(name)
        for cls in (getattr(module, "GCSFileSystem", None), getattr(module, "ExtendedGcsFileSystem", None)):
            if cls is not None:
                cls.clear_instance_cache()
    if (backend := sys.modules.get("etils.epath.backend")) is not None:
        backend.fsspec_backend._get_filesystem.cache_clear()  # holds its own gcsfs instance
    if (gpath := sys.modules.get("etils.epath.gpath")) is not None:
        gpath._is_tf_installed.cache_clear()  # caches EPATH_USE_TF
        if hasattr(gpath, "_is_zonal_gcs_bucket"):
            gpath._is_zonal_gcs_bucket.cache_clear()
    if (gcs_utils := sys.modules.get("orbax.checkpoint._src.path.gcs_utils")) is not None:
        gcs_utils.get_bucket.cache_clear()  # google-cloud-storage buckets (hence clients) per bucket name


def _serve(host: str, bucket: str) -> None:
    """Child process: in-memory emulator on a free port of `host`; prints the port; runs until stdin closes."""
    import http.server
    import logging
    from http import HTTPStatus

    from gcp_storage_emulator import server as emulator
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    logging.disable(logging.INFO)  # the emulator logs every request at INFO
    logging.getLogger("gcp_storage_emulator.storage").setLevel(logging.CRITICAL)  # every 404 as an "error"
    http.server.HTTPServer.request_queue_size = 256  # TensorStore opens many connections at once
    base_handle_error = http.server.HTTPServer.handle_error

    def handle_error(self, request, client_address):
        # gcsfs races an object GET against a listing and drops the loser's connection: not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            base_handle_error(self, request, client_address)

    http.server.HTTPServer.handle_error = handle_error

    def generation(storage, bucket_name, object_id) -> int:
        """The live generation of an object; 0 if there is none (GCS's meaning of ifGenerationMatch=0)."""
        try:
            return int(storage.get_file_obj(bucket_name, object_id).get("generation") or 0)
        except NotFound:
            return 0

    def precondition(request, current: int, when_unchanged: HTTPStatus) -> HTTPStatus | None:
        """The status a failed ifGenerationMatch / ifGenerationNotMatch calls for; None if they hold."""
        query = request.query
        if "ifGenerationMatch" in query and int(query["ifGenerationMatch"][0]) != current:
            return HTTPStatus.PRECONDITION_FAILED
        if "ifGenerationNotMatch" in query and int(query["ifGenerationNotMatch"][0]) == current:
            return when_unchanged
        return None

    def reading(handler):
        # GET: 304 when ifGenerationNotMatch fails (TensorStore revalidates its cache so), 412 when ifGenerationMatch
        # does; and real GCS's x-goog-generation header, without which TensorStore takes a read object for
        # "generation 0" and then refuses its own conditional write ("Malformed StorageGeneration").
        def wrapped(request, response, storage, *args, **kwargs):
            current = generation(storage, request.params["bucket_name"], request.params["object_id"])
            if current and (status := precondition(request, current, HTTPStatus.NOT_MODIFIED)):
                response.status = status
                return
            handler(request, response, storage, *args, **kwargs)
            if current and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
                response["x-goog-generation"] = str(current)
                response["x-goog-metageneration"] = "1"
        return wrapped

    def writing(handler, name_from_query: bool):
        # Uploads and deletes honour ifGenerationMatch / ifGenerationNotMatch (412), as OCDBT's manifest writes expect.
        def wrapped(request, response, storage, *args, **kwargs):
            bucket_name = request.params["bucket_name"]
            object_id = request.query.get("name", [None])[0] if name_from_query else request.params["object_id"]
            if object_id is not None and precondition(request, generation(storage, bucket_name, object_id),
                                                      HTTPStatus.PRECONDITION_FAILED):
                request.data  # noqa: B018 -- read the body before answering
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "Precondition Failed"}})
                return
            handler(request, response, storage, *args, **kwargs)
        return wrapped

    def move(request, response, storage, *args, **kwargs):
        # objects.moveTo (gcsfs renames with it): copy + delete, atomic here since the server is single-threaded.
        bucket_name, source, target = (request.params[k] for k in ("bucket_name", "object_id", "dest_object_id"))
        try:
            resource = objects._copy(request.base_url, storage, bucket_name, source, bucket_name, target)
        except NotFound:
            response.status = HTTPStatus.NOT_FOUND
            return
        objects._delete(storage, bucket_name, source)
        response.json(resource)

    replaced = {objects.get: reading(objects.get), objects.download: reading(objects.download),
                objects.insert: writing(objects.insert, name_from_query=True),
                objects.delete: writing(objects.delete, name_from_query=False)}
    move_route = (r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/"
                  r"(?P<dest_object_id>.*[^/]+)$")
    emulator.HANDLERS = ((move_route, {"POST": move}),
                         *((regex, {method: replaced.get(handler, handler) for method, handler in handlers.items()})
                           for regex, handlers in emulator.HANDLERS))
    base_close = emulator.Response.close

    def close(self):
        # Clients retry a 501 (gcsfs: 5 times over ~35 s); a 405 makes an unsupported call fail at once.
        if self.status == HTTPStatus.NOT_IMPLEMENTED:
            self.status = HTTPStatus.METHOD_NOT_ALLOWED
            self.json({"error": {"code": 405, "message": "not supported by the GCS emulator"}})
        base_close(self)

    emulator.Response.close = close
    server = emulator.create_server(host, 0, in_memory=True, default_bucket=bucket)
    server.start()
    print(server._api._httpd.server_address[1], flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    _serve(*sys.argv[2:4])
