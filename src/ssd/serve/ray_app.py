"""The same app as Ray Serve replicas (`ssd serve --ray --replicas N`, extra [ray]).

Each replica loads the model and builds the FastAPI app of `ssd.serve.app` itself (the model is never
pickled from the driver) and batches its own requests with its `MicroBatcher`; Ray's proxy spreads
requests over the replicas. Ray is started locally (or joined, where RAY_ADDRESS names a cluster); its HTTP proxy listens on --host.
"""

from __future__ import annotations

import signal
import sys
import time

from ssd.errors import UserError, require_extra
from ssd.serve.app import ServerState, create_app
from ssd.serve.settings import ServeSettings


def detection_deployment(settings: ServeSettings, replicas: int):
    """A bound Ray Serve application of `replicas` replicas serving `settings`."""
    from ray import serve

    @serve.deployment(num_replicas=replicas, name="ssd")
    @serve.ingress()
    class SSDDetection:
        def __init__(self, settings: ServeSettings):
            # Loaded here, before Ray counts the replica as started: Ray's proxy sends requests only to
            # started replicas, so none reaches a replica whose model is still loading.
            self.server = ServerState(settings)
            self.server.load()
            if not self.server.ready:
                raise UserError(self.server.failure)

        def __serve_build_asgi_app__(self):  # (`app` is a name Ray Serve keeps for itself)
            return create_app(self.server.settings, self.server.detector)

    return SSDDetection.bind(settings)


def serve_with_ray(settings: ServeSettings, host: str, port: int, replicas: int) -> int:
    ray = require_extra("ray", "ray", "ssd serve --ray")
    serve = require_extra("ray.serve", "ray", "ssd serve --ray")
    # A local Ray instance, or the cluster RAY_ADDRESS names. Ray's own processes talk over the node's
    # address (Ray refuses loopback for them); the HTTP proxy listens on --host.
    ray.init(include_dashboard=False, log_to_driver=False)
    # Ours, not Ray's (which ray.init installs and which aborts the process): SIGTERM stops the loop below.
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    try:
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(detection_deployment(settings, replicas), name="ssd", route_prefix="/")
        except RuntimeError as error:  # Ray's message ends a traceback of its own; its first line says it
            raise UserError(
                f"Ray Serve could not start the replicas ({str(error).splitlines()[0]}); their logs are "
                "under /tmp/ray/session_latest/logs/serve/"
            ) from None
        print(
            f"serving {settings.weights} with {replicas} Ray Serve replicas on http://{host}:{port}/ (Ctrl-C stops)"
        )
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()  # lets each replica finish its requests in flight
        ray.shutdown()
    print("stopped", file=sys.stderr)
    return 0
